"""Issue 5 end to end: provider agents as real processes behind the real dispatcher.

- a broken chat template is advertised (`template_render_ok=false`) and fences the model;
- a template that fails only the tool flow serves plain chat but never tools;
- the `openai` engine streams from a real OpenAI-compatible HTTP server and maps its
  errors; a client that goes away closes the upstream stream;
- `Cancel` stops a long sim generation within 100 ms of arrival (a real agent process
  against an in-test link server that timestamps every frame);
- a restarted dispatcher is rejoined by the same provider processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2, registry_pb2_grpc
from stack.launcher import API_KEY, MODELS_DIR, ProviderSpec, Stack
from tests.e2e.conftest import FAST_ENV
from tests.fakes.link_dispatcher import TOKEN, FakeDispatcher
from tests.fakes.upstream import WORDS, FakeUpstream, fake_upstream

pytestmark = pytest.mark.e2e
MODEL = "hedgerow-sim-1"
REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "fixtures" / "templates"
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


def model_dir(root: Path, template: str | None = None) -> Path:
    """A models folder holding one `hedgerow-sim-1`, with `template` swapped in if given."""
    shutil.copytree(MODELS_DIR / MODEL, root / MODEL)
    if template is not None:
        (root / MODEL / "chat_template.jinja").write_text(template)
    return root


def chat(
    base_url: str,
    text: str = "hello",
    *,
    tools: bool = False,
    only: list[str] | None = None,
    stream: bool = False,
    timeout: float = 20,
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 3,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }
    if tools:
        body["tools"] = [TOOL]
    if only is not None:
        body["provider"] = {"only": only}
    return httpx.post(f"{base_url}/chat/completions", json=body, headers=HEADERS, timeout=timeout)


def explain(stack: Stack, *, tools: bool = False) -> dict[str, registry_pb2.ProviderVerdict]:
    with stack.registry_channel() as channel:
        reply = registry_pb2_grpc.RegistryStub(channel).Explain(
            registry_pb2.ExplainRequest(model=MODEL, traits=common_pb2.Traits(has_tools=tools)),
            timeout=5,
        )
    return {p.provider_id: p for p in reply.providers}


# --- template verdicts route traffic (E3 -> C1) -----------------------------------------


@pytest.fixture(scope="module")
def template_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("models")
    providers = [
        ProviderSpec("sim-good", models_dir=model_dir(root / "good")),
        ProviderSpec(
            "sim-broken",
            models_dir=model_dir(root / "broken", (TEMPLATES / "broken_syntax.jinja").read_text()),
        ),
        ProviderSpec(
            "sim-incident",
            models_dir=model_dir(
                root / "incident", (TEMPLATES / "incident_tool_args.jinja").read_text()
            ),
        ),
    ]
    with Stack(providers, env=FAST_ENV) as stack:
        yield stack


def test_e3_broken_template_is_advertised_false_and_gets_no_traffic(template_stack: Stack) -> None:
    s = template_stack
    verdicts = explain(s)
    assert not verdicts["sim-broken"].eligible
    assert "template_broken" in verdicts["sim-broken"].reasons
    assert verdicts["sim-good"].eligible and verdicts["sim-incident"].eligible

    # The operator's view: `python -m registry_svc explain` names the reason too.
    registry = ("--registry", s.registry_addr)
    cli = subprocess.run(
        [sys.executable, "-m", "registry_svc", "explain", "--model", MODEL, *registry],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=s.env(),  # the operator's settings: the stack's service token
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    (row,) = [line for line in cli.stdout.splitlines() if line.startswith("sim-broken")]
    assert "template_broken" in row and " no " in row

    served = {chat(s.base_url, f"plain {i}").headers["x-provider-id"] for i in range(8)}
    for i in range(4):
        served.add(chat(s.base_url, f"tools {i}", tools=True).headers["x-provider-id"])
    assert "sim-broken" not in served
    # Even asked for by name, a provider with a broken template is never sent the request.
    r = chat(s.base_url, only=["sim-broken"])
    assert r.status_code == 503, r.text
    assert "x-provider-id" not in r.headers


def test_e3_tools_only_failure_serves_plain_chat_but_never_tools(template_stack: Stack) -> None:
    s = template_stack
    assert "tools_template_broken" in explain(s, tools=True)["sim-incident"].reasons
    assert explain(s)["sim-incident"].eligible

    r = chat(s.base_url, "plain for the incident provider", only=["sim-incident"])
    assert r.status_code == 200, r.text
    assert r.headers["x-provider-id"] == "sim-incident"
    assert r.json()["choices"][0]["message"]["content"]

    # A6: no tools-capable provider within the allowlist -> 503 at once, never routed to it.
    started = time.monotonic()
    r = chat(s.base_url, "tools", tools=True, only=["sim-incident"])
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
    assert time.monotonic() - started < 5, "fails at once, not after a queue wait"

    for i in range(6):
        r = chat(s.base_url, f"weather {i}", tools=True)
        assert r.status_code == 200, r.text
        assert r.headers["x-provider-id"] == "sim-good"
        assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == (
            "get_weather"
        )
    # Unrestricted plain chat spreads over both healthy providers (near-tie random pick).
    seen: set[str] = set()
    for i in range(40):
        seen.add(chat(s.base_url, f"spread {i}").headers["x-provider-id"])
        if "sim-incident" in seen:
            break
    assert "sim-incident" in seen and "sim-broken" not in seen


# --- the openai engine against a real HTTP server (E5) -------------------------------------


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def openai_stack(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("upstream-models")
    providers = [
        ProviderSpec(
            "up-a",
            models_dir=model_dir(root / "up"),
            args=("--engine", "openai", "--upstream", upstream.url),
        ),
        ProviderSpec("sim-b", models_dir=model_dir(root / "sim")),
    ]
    # This stack is about error mapping and failover, not the breaker: never cool down.
    env = {**FAST_ENV, "HEDGEROW_BREAKER_THRESHOLD": "1000"}
    with Stack(providers, env=env) as stack:
        yield stack


def test_e5_openai_engine_streams_from_a_real_upstream(
    openai_stack: Stack, upstream: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=openai_stack.base_url, api_key=API_KEY)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        stream=True,
        messages=[{"role": "user", "content": "stream it"}],
        extra_body={"provider": {"only": ["up-a"]}},
    )
    assert raw.headers["x-provider-id"] == "up-a"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(WORDS)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.model == MODEL for c in chunks)
    sent = upstream.requests[-1]
    assert sent["messages"] == [{"role": "user", "content": "stream it"}]
    assert sent["stream"] is True and "provider" not in sent

    done = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "whole"}],
        extra_body={"provider": {"only": ["up-a"]}},
    )
    assert done.choices[0].message.content == "".join(WORDS)
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (7, len(WORDS))


@pytest.mark.parametrize(("upstream_status", "client_status"), [(500, 500), (400, 400)])
def test_e5_upstream_http_error_reaches_the_client_cleanly(
    openai_stack: Stack, upstream_status: int, client_status: int
) -> None:
    """Only the openai provider is allowed: its mapped status is the request's last real
    error (B11); 400 is the client's fault and is not retried."""
    for stream in (False, True):
        started = time.monotonic()
        r = chat(
            openai_stack.base_url, f"[[up:status={upstream_status}]]", only=["up-a"], stream=stream
        )
        assert time.monotonic() - started < 15, "does not hang"
        assert r.status_code == client_status, r.text
        error = r.json()["error"]
        assert f"upstream says {upstream_status}" in error["message"]
        assert "x-provider-id" not in r.headers, "nothing was committed"


def test_e5_upstream_500_fails_over_to_another_provider(
    openai_stack: Stack, upstream: FakeUpstream
) -> None:
    """B2: the upstream's 500 reaches the dispatcher as a 500 error frame before any content,
    so the request moves to the sim provider invisibly."""
    marker = "[[up:status=500]] fail over"
    before = sum(1 for b in upstream.requests if marker in json.dumps(b))
    failed_over = 0
    for _ in range(20):
        r = chat(openai_stack.base_url, marker)
        assert r.status_code == 200, r.text
        assert r.headers["x-provider-id"] == "sim-b"
        if r.headers["x-attempts"] != "1":
            failed_over += 1
            break
    hits = sum(1 for b in upstream.requests if marker in json.dumps(b)) - before
    assert failed_over == 1 and hits >= 1, "the openai provider was tried first once"


def test_e5_client_gone_closes_the_upstream_stream(
    openai_stack: Stack, upstream: FakeUpstream
) -> None:
    upstream.reset_slow()
    body = {
        "model": MODEL,
        "stream": True,
        "provider": {"only": ["up-a"]},
        "messages": [{"role": "user", "content": "[[up:slow]]"}],
    }
    with httpx.stream(
        "POST", f"{openai_stack.base_url}/chat/completions", json=body, headers=HEADERS, timeout=20
    ) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        for line in lines:
            if '" w2"' in line:
                break
    # Cancel travels gateway -> dispatcher -> agent -> engine -> upstream HTTP close.
    assert upstream.slow_gone.wait(10), "the upstream stream was never closed"


# --- Cancel within 100 ms, measured on the provider's link (E5) --------------------------


async def test_e5_cancel_stops_a_long_sim_generation_within_100ms(tmp_path: Path) -> None:
    """A real agent process; the in-test link server timestamps every frame on arrival."""
    async with FakeDispatcher(heartbeat_interval_s=0.5) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEROW_")}
        env.update(
            {
                "HEDGEROW_DISPATCHER_URL": fake.url,
                "HEDGEROW_ENROLLMENT_TOKEN": TOKEN,
                "HEDGEROW_MODEL_DIR": str(MODELS_DIR),
                "HEDGEROW_PROVIDER_ID": "cancel-probe",
                "HEDGEROW_KEY_FILE": str(tmp_path / "provider.key"),  # not the user's home
                "HEDGEROW_SIM_TTFT_S": "0",
                "HEDGEROW_SIM_TOKENS_PER_S": "200",
                "HEDGEROW_SIM_MAX_TOKENS": "100000",
            }
        )
        agent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "provider_agent",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            session = await fake.session(within=30)
            for attempt in range(3):
                rid, _ = await session.request(
                    {
                        "model": MODEL,
                        "max_tokens": 100000,
                        "messages": [{"role": "user", "content": f"long story {attempt}"}],
                    }
                )
                for _ in range(10):
                    got = await session.next("chunk")
                    assert got.frame.chunk.request_id == rid
                cancelled_at = await session.cancel(rid)
                await asyncio.sleep(0.6)  # ~120 chunks if generation went on
                late = [
                    round(r.at - cancelled_at, 4)
                    for r in session.log
                    if r.at > cancelled_at
                    and r.kind in ("chunk", "complete", "error")
                    and getattr(r.frame, r.kind).request_id == rid
                ]
                assert all(delay <= 0.1 for delay in late), f"frames after Cancel: {late}"
                assert not any(r.kind in ("complete", "error") for r in session.log)
        finally:
            agent.terminate()
            _, stderr = await asyncio.wait_for(agent.communicate(), 10)
        assert agent.returncode == 0, stderr.decode()[-2000:]
        assert any(r.kind == "goodbye" for r in session.log), "SIGTERM says Goodbye first"


# --- a restarted dispatcher is rejoined (E1) -------------------------------------------------


def test_e1_restarted_dispatcher_is_rejoined_automatically() -> None:
    with Stack([ProviderSpec("sim-a"), ProviderSpec("sim-b")], env=FAST_ENV) as s:
        assert chat(s.base_url).status_code == 200
        pids = {name: s.processes[name].popen.pid for name in ("sim-a", "sim-b")}

        s.terminate("dispatcher")
        s.wait_providers(["sim-a", "sim-b"], timeout_s=10, online=False)
        assert chat(s.base_url).status_code in (502, 503), "no dispatcher, no service"
        s.respawn("dispatcher")
        s.wait_providers(["sim-a", "sim-b"], timeout_s=20)

        for name, pid in pids.items():
            assert s.processes[name].alive() and s.processes[name].popen.pid == pid
        # The request made while the dispatcher was down put the gateway's gRPC channel
        # into reconnect backoff; give the gateway (not the providers) a bounded moment.
        deadline = time.monotonic() + 10
        while (r := chat(s.base_url, "first after restart")).status_code != 200:
            assert r.status_code == 503 and "dispatcher unavailable" in r.text, r.text
            assert time.monotonic() < deadline, "gateway never reached the new dispatcher"
            time.sleep(0.1)
        served = set()
        for i in range(30):
            r = chat(s.base_url, f"after restart {i}")
            assert r.status_code == 200, r.text
            served.add(r.headers["x-provider-id"])
            if served == {"sim-a", "sim-b"}:
                break
        assert served == {"sim-a", "sim-b"}, "both providers rejoined and serve"
        for name in pids:
            log = s.processes[name].log_path.read_text()
            assert log.count('"msg": "registered"') >= 2, f"{name} registered again"


def test_b3_dispatcher_killed_mid_stream_ends_every_stream_in_band_then_recovers() -> None:
    """The gateway runs every dispatch over one stream to the dispatcher. When the
    dispatcher dies (SIGKILL: no goodbye), each committed stream ends at once with an
    in-band error and one terminator (B3) -- none hangs -- and once a dispatcher is back,
    requests are served again over a new stream."""
    env = {**FAST_ENV, "HEDGEROW_SIM_TOKENS_PER_S": "20", "HEDGEROW_SIM_MAX_TOKENS": "200"}
    with Stack([ProviderSpec("sim-a"), ProviderSpec("sim-b")], env=env) as s:
        body = {
            "model": MODEL,
            "stream": True,
            "max_tokens": 200,
            "messages": [{"role": "user", "content": "a long story"}],
        }
        headers = {"Authorization": f"Bearer {API_KEY}"}
        url = f"{s.base_url}/chat/completions"
        with httpx.Client(timeout=20) as client:
            streams = [
                client.stream("POST", url, json={**body, "user": f"u{i}"}, headers=headers)
                for i in range(2)
            ]
            responses = [stream.__enter__() for stream in streams]
            try:
                lines = [r.iter_lines() for r in responses]
                for r, it in zip(responses, lines, strict=True):
                    assert r.status_code == 200
                    assert next(line for line in it if '"content"' in line)  # committed
                s.kill("dispatcher")
                for it in lines:
                    rest = list(it)  # must end, not hang (the client timeout is 20 s)
                    events = [line for line in rest if line.startswith("data: ")]
                    assert events[-1] == "data: [DONE]"
                    assert sum(e == "data: [DONE]" for e in events) == 1
                    assert any('"error"' in e for e in events), events[-3:]
            finally:
                for stream in streams:
                    stream.__exit__(None, None, None)
        s.respawn("dispatcher")
        s.wait_providers(["sim-a", "sim-b"], timeout_s=20)
        deadline = time.monotonic() + 10
        while (r := chat(s.base_url, "after the crash")).status_code != 200:
            assert r.status_code == 503 and "dispatcher unavailable" in r.text, r.text
            assert time.monotonic() < deadline, "gateway never reached the new dispatcher"
            time.sleep(0.1)
