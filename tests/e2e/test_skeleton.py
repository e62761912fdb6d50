"""Issue 2 walking skeleton, end to end through real processes and the official openai SDK."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from stack.launcher import API_KEY, ProviderSpec, Stack
from tests.e2e.conftest import FAST_ENV

pytestmark = pytest.mark.e2e
MODEL = "hedgerow-sim-1"


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n"), "SSE stream must end with a blank line"
    events = [block for block in text.split("\n\n") if block]
    for block in events:
        assert block.startswith("data: "), f"unexpected SSE block {block!r}"
    return [block[len("data: ") :] for block in events]


def test_openai_sdk_streams_token_by_token(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key=API_KEY)
    stream = client.chat.completions.create(
        model=MODEL,
        stream=True,
        max_tokens=8,
        messages=[{"role": "user", "content": "Say hello"}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 8, "each token arrives as its own chunk"
    assert len(text.split()) == 8
    assert all(c.model == MODEL for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_openai_sdk_non_streaming_has_usage(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key=API_KEY)
    completion = client.chat.completions.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert len((completion.choices[0].message.content or "").split()) == 5
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 5


def test_same_prompt_same_text(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key=API_KEY)
    messages = [{"role": "user", "content": "determinism"}]
    a = client.chat.completions.create(model=MODEL, max_tokens=6, messages=messages)  # type: ignore[arg-type]
    b = client.chat.completions.create(model=MODEL, max_tokens=6, messages=messages)  # type: ignore[arg-type]
    assert a.choices[0].message.content == b.choices[0].message.content


def test_a9_raw_sse_framing_exactly_one_done(stack: Stack) -> None:
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 4,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "frame it"}],
    }
    with httpx.stream(
        "POST",
        f"{stack.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for header in ("x-request-id", "x-provider-id", "x-provider-version", "x-attempts"):
            assert r.headers[header], header
        timing = json.loads(r.headers["x-timing"])
        assert set(timing) == {
            "parse_us",
            "normalize_us",
            "admit_us",
            "queue_us",
            "dispatch_us",
            "provider_us",
        }
        text = r.read().decode()
    events = sse_events(text)
    assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
    payloads = [json.loads(e) for e in events[:-1]]
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert payloads[-1]["usage"]["completion_tokens"] == 4 and payloads[-1]["choices"] == []
    assert {p["id"] for p in payloads} == {payloads[0]["id"]}


def test_a3_unknown_model_is_404_in_openai_shape(stack: Stack) -> None:
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert set(err) == {"type", "message", "code", "param"}
    client = openai.OpenAI(base_url=stack.base_url, api_key=API_KEY)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )


def test_a2_missing_or_wrong_key_is_401(stack: Stack) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{stack.base_url}/chat/completions", json=body)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(f"{stack.base_url}/chat/completions", json=body, headers={"x-api-key": "wrong"})
    assert r.status_code == 401
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={**body, "max_tokens": 1},
        headers={"x-api-key": API_KEY},
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"model": MODEL, "messages": "hi"}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": [{"content": "x"}]}).encode(), "messages[0]"),
        (
            json.dumps(
                {"model": MODEL, "n": 2, "messages": [{"role": "user", "content": "x"}]}
            ).encode(),
            "n",
        ),
    ],
)
def test_a3_bad_input_is_400_naming_the_field(stack: Stack, body: bytes, param: str | None) -> None:
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_a3_oversized_body_is_413(stack: Stack) -> None:
    big = (
        b'{"model": "x", "messages": [{"role": "user", "content": "'
        + b"a" * (17 * 1024 * 1024)
        + b'"}]}'
    )
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        content=big,
        timeout=30,
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_models_list(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key=API_KEY)
    ids = {m.id for m in client.models.list()}
    assert ids == {"hedgerow-sim-1", "hedgerow-sim-vision-1"}


def test_health_and_metrics(stack: Stack) -> None:
    root = stack.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/healthz").status_code == 200
    assert httpx.get(f"{root}/readyz").status_code == 200
    metrics = httpx.get(f"{root}/metrics").text
    assert "gateway_requests_total" in metrics


def test_legacy_completions_stream_and_not(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base_url, api_key=API_KEY)
    done = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4)
    assert done.object == "text_completion"
    assert len(done.choices[0].text.split()) == 4
    streamed = list(
        client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=4, stream=True)
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == done.choices[0].text


def test_killed_provider_fails_in_flight_request_and_next_goes_elsewhere() -> None:
    """A provider dying mid-stream ends its request with an error (no hang), the registry
    marks it offline, and the next request is served by the other provider."""
    env = {**FAST_ENV, "HEDGEROW_SIM_TOKENS_PER_S": "20"}
    with Stack([ProviderSpec("sim-a"), ProviderSpec("sim-b")], env=env) as s:
        body = {
            "model": MODEL,
            "stream": True,
            "max_tokens": 200,
            "messages": [{"role": "user", "content": "long story"}],
        }
        with httpx.stream(
            "POST",
            f"{s.base_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=20,
        ) as r:
            assert r.status_code == 200
            victim = r.headers["x-provider-id"]
            survivor = "sim-b" if victim == "sim-a" else "sim-a"
            lines = r.iter_lines()
            seen = 0
            for line in lines:
                if '"content":"' in line.replace(" ", "") and '"content":""' not in line.replace(
                    " ", ""
                ):
                    seen += 1
                    if seen == 2:
                        break
            s.kill(victim)
            started = time.monotonic()
            rest = "\n".join(lines)
        assert time.monotonic() - started < 10
        assert '"error"' in rest, "the in-flight request must end with an in-band error"
        assert rest.strip().endswith("data: [DONE]")
        s.wait_providers([victim], timeout_s=10, online=False)
        client = openai.OpenAI(base_url=s.base_url, api_key=API_KEY)
        for _ in range(3):
            reply = client.chat.completions.with_raw_response.create(
                model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "next"}]
            )
            assert reply.headers["x-provider-id"] == survivor
