"""Issue 8: every dialect as its users' SDKs expect (A1, A9, A10), against the running stack."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import anthropic
import httpx
import openai
import pytest

from stack.launcher import API_KEY, ProviderSpec, Stack
from tests.e2e.conftest import FAST_ENV

pytestmark = pytest.mark.e2e
MODEL = "hedgerow-sim-1"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": ["string", "null"]}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


@pytest.fixture
def oai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=API_KEY)


@pytest.fixture
def claude(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.base_url.removesuffix("/v1"), api_key=API_KEY)


# --- chat completions ---------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a10_chat_tool_call_round_trip(oai: openai.OpenAI, stream: bool) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Oslo?"}]
    if stream:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in oai.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=[WEATHER_TOOL],
            stream=True,  # type: ignore[list-item,arg-type]
        ):
            for tc in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
                slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] += (tc.function.name or "") if tc.function else ""
                slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        assert finish == "tool_calls" and list(calls) == [0]
        call = calls[0]
    else:
        reply = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
        assert reply.choices[0].finish_reason == "tool_calls"
        tc = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
        call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}  # type: ignore[union-attr]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    assert json.loads(call["arguments"]) == {"city": "sim", "unit": "c"}
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "12 C and sunny"},
    ]
    answer = oai.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content


# --- Responses API ------------------------------------------------------------------


def test_a10_responses_text(oai: openai.OpenAI) -> None:
    r = oai.responses.create(
        model=MODEL, input="Tell me a story", instructions="Be brief", max_output_tokens=6
    )
    assert r.status == "completed" and r.model == MODEL
    assert len(r.output_text.split()) == 6
    assert r.usage is not None and r.usage.output_tokens == 6


def test_a10_responses_stream_events(oai: openai.OpenAI) -> None:
    kinds: list[str] = []
    text = ""
    with oai.responses.stream(model=MODEL, input="Tell me a story", max_output_tokens=5) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and kinds.count("response.completed") == 1
    for kind in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.output_item.done",
    ):
        assert kind in kinds
    assert kinds.count("response.output_text.delta") == 5
    assert final.output_text == text


@pytest.mark.parametrize("stream", [False, True])
def test_a10_responses_function_call_round_trip(oai: openai.OpenAI, stream: bool) -> None:
    tool = {"type": "function", **WEATHER_TOOL["function"]}  # type: ignore[dict-item]
    if stream:
        with oai.responses.stream(model=MODEL, input="Weather in Oslo?", tools=[tool]) as s:  # type: ignore[list-item]
            kinds = [e.type for e in s]
            first = s.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
    else:
        first = oai.responses.create(model=MODEL, input="Weather in Oslo?", tools=[tool])  # type: ignore[list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "sim", "unit": "c"}
    second = oai.responses.create(
        model=MODEL,
        tools=[tool],
        max_output_tokens=4,  # type: ignore[list-item]
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "12 C"},
        ],
    )
    assert len(second.output_text.split()) == 4


# --- Anthropic Messages ---------------------------------------------------------------


def test_a10_anthropic_messages_create(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(
        model=MODEL,
        max_tokens=5,
        system="Be brief",
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.stop_reason == "max_tokens"
    assert msg.content[0].type == "text" and len(msg.content[0].text.split()) == 5
    assert msg.usage.output_tokens == 5 and msg.usage.input_tokens > 0


def test_a10_anthropic_messages_stream(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model=MODEL, max_tokens=4, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("message_stop") == 1
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert len(final.content[0].text.split()) == 4  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_a10_anthropic_tool_use_round_trip(claude: anthropic.Anthropic, stream: bool) -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]  # type: ignore[index]
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    if stream:
        with claude.messages.stream(model=MODEL, max_tokens=50, tools=tools, messages=ask) as s:  # type: ignore[arg-type]
            for _ in s:
                pass
            first = s.get_final_message()
    else:
        first = claude.messages.create(model=MODEL, max_tokens=50, tools=tools, messages=ask)  # type: ignore[arg-type]
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "sim", "unit": "c"}
    answer = claude.messages.create(
        model=MODEL,
        max_tokens=4,
        tools=tools,  # type: ignore[arg-type]
        messages=[
            *ask,  # type: ignore[list-item]
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": use.id, "name": use.name, "input": use.input}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "12 C"}],
            },
        ],
    )
    assert answer.stop_reason == "max_tokens" and answer.content[0].type == "text"


def test_a2_anthropic_errors_use_anthropic_shape(stack: Stack) -> None:
    url = f"{stack.base_url}/messages"
    r = httpx.post(
        url, json={"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 401
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(
        url,
        headers={"x-api-key": API_KEY},
        json={"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.post(
        url,
        headers={"x-api-key": API_KEY},
        json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


# --- failures are invisible before content and honest after ----------------------------


@pytest.fixture(scope="module")
def faulty() -> Iterator[Stack]:
    """sim-bad fails every request after its role chunk; sim-good is healthy. The breaker is
    set out of reach so sim-bad keeps being picked and every retry path is exercised."""
    env = {**FAST_ENV, "HEDGEROW_BREAKER_THRESHOLD": "100000"}
    bad = ProviderSpec("sim-bad", env={"HEDGEROW_SIM_FAULTS": "error_before_content"})
    with Stack([bad, ProviderSpec("sim-good")], env=env) as s:
        yield s


def _until_retried(call: Callable[[], tuple[int, dict[str, str]]]) -> None:
    """Repeat a request until one was first sent to sim-bad; every one must succeed."""
    for _ in range(30):
        status, headers = call()
        assert status == 200
        assert headers["x-provider-id"] == "sim-good"
        if headers["x-attempts"] == "2":
            return
    pytest.fail("sim-bad was never tried first")


def test_b2_pre_content_failure_invisible_on_every_endpoint(faulty: Stack) -> None:
    oai = openai.OpenAI(base_url=faulty.base_url, api_key=API_KEY, max_retries=0)
    claude = anthropic.Anthropic(
        base_url=faulty.base_url.removesuffix("/v1"), api_key=API_KEY, max_retries=0
    )
    hello = [{"role": "user", "content": "Hello"}]

    def chat() -> tuple[int, dict[str, str]]:
        raw = oai.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=3, messages=hello
        )  # type: ignore[arg-type]
        assert len((raw.parse().choices[0].message.content or "").split()) == 3
        return raw.status_code, dict(raw.headers)

    def chat_stream() -> tuple[int, dict[str, str]]:
        with oai.chat.completions.with_streaming_response.create(
            model=MODEL,
            max_tokens=3,
            messages=hello,
            stream=True,  # type: ignore[arg-type]
        ) as raw:
            events = [line for line in raw.iter_lines() if line]
            assert events.count("data: [DONE]") == 1 and '"error"' not in "".join(events)
            return raw.status_code, dict(raw.headers)

    def responses() -> tuple[int, dict[str, str]]:
        raw = oai.responses.with_raw_response.create(
            model=MODEL, input="Hello", max_output_tokens=3
        )
        assert len(raw.parse().output_text.split()) == 3
        return raw.status_code, dict(raw.headers)

    def messages() -> tuple[int, dict[str, str]]:
        raw = claude.messages.with_raw_response.create(model=MODEL, max_tokens=3, messages=hello)  # type: ignore[arg-type]
        assert raw.parse().stop_reason == "max_tokens"
        return raw.status_code, dict(raw.headers)

    def completions() -> tuple[int, dict[str, str]]:
        raw = oai.completions.with_raw_response.create(model=MODEL, prompt="Once", max_tokens=3)
        assert len(raw.parse().choices[0].text.split()) == 3
        return raw.status_code, dict(raw.headers)

    for call in (chat, chat_stream, responses, messages, completions):
        _until_retried(call)


def test_b3_post_content_failure_is_in_band_in_each_dialect(faulty: Stack) -> None:
    oai = openai.OpenAI(base_url=faulty.base_url, api_key=API_KEY, max_retries=0)
    claude = anthropic.Anthropic(
        base_url=faulty.base_url.removesuffix("/v1"), api_key=API_KEY, max_retries=0
    )
    marker = "[[sim:fault=error_after_content]]"
    with pytest.raises(openai.APIError, match="simulated failure after content"):
        for _ in oai.chat.completions.create(
            model=MODEL, max_tokens=10, stream=True, messages=[{"role": "user", "content": marker}]
        ):
            pass
    with pytest.raises(openai.APIError, match="simulated failure after content"):
        with oai.responses.stream(model=MODEL, input=marker, max_output_tokens=10) as s:
            for _ in s:
                pass
    with pytest.raises(anthropic.APIError, match="simulated failure after content"):
        with claude.messages.stream(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": marker}]
        ) as s2:
            for _ in s2:
                pass
    # Non-streaming: nothing was written yet, so the provider's failure is the status, and
    # it is not retried (B3: content was produced).
    with pytest.raises(openai.APIStatusError, match="simulated failure after content") as info:
        oai.chat.completions.with_raw_response.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": marker}]
        )
    assert info.value.status_code == 500


def test_a1_legacy_completions_and_models(oai: openai.OpenAI) -> None:
    done = oai.completions.create(model=MODEL, prompt=["Once"], max_tokens=3)
    assert len(done.choices[0].text.split()) == 3
    assert MODEL in {m.id for m in oai.models.list()}
