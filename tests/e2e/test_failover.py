"""Issue 7 end to end: deferred commit, invisible pre-content failover, the speculative race,
breaker feeding and capability gates, through the gateway with httpx and the official SDKs.

Two sim providers. sim-a advertises a fast decode rate and sim-b a very slow one, so the
registry's cost model (C5) always picks sim-a first while it is eligible: a test breaks
sim-a (provider-wide sim faults) and watches where the request goes. Which provider got
which attempt, and with which Release status (the breaker feed), comes from the
dispatcher's per-attempt log lines, correlated by the X-Request-Id the test sends.
Each test restarts both providers with its own faults; a provider that registers again
starts with a clean breaker (C4), so tests do not leak cooldowns into each other.
"""

from __future__ import annotations

import itertools
import json
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from stack.launcher import API_KEY, MODELS_DIR, ProviderSpec, Stack
from tests.e2e.conftest import FAST_ENV
from tests.e2e.observe import (
    CANCELLED,
    AttemptLog,
    DispatcherLog,
    Sse,
    all_released,
    dispatcher_counters,
    explain,
    sent_total,
    wait_idle,
)

pytestmark = pytest.mark.e2e
MODEL = "hedgerow-sim-1"
TOOLS_FLOOR = "0.6.3"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
# sim-a is always the cheapest candidate (C5); sim-b is the fallback.
CHEAP = {"HEDGEROW_DECODE_TPS": "1000"}
DEAR = {"HEDGEROW_DECODE_TPS": "0.5"}
STREAM = pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
_ids = itertools.count(1)


def spec(
    name: str,
    faults: str = "",
    *,
    version: str | None = None,
    models_dir: Path = MODELS_DIR,
    **env: str,
) -> ProviderSpec:
    rate = CHEAP if name == "sim-a" else DEAR
    return ProviderSpec(
        name,
        models_dir=models_dir,
        version=version,
        env={**rate, "HEDGEROW_SIM_FAULTS": faults, **env},
    )


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    request_id: str
    sse: Sse | None = None  # streaming 200s
    completion: Any = None  # non-streaming 200s (openai SDK object)
    error: dict[str, Any] = field(default_factory=dict)  # error responses: the `error` object

    @property
    def provider(self) -> str:
        return self.headers["x-provider-id"]


class Fleet:
    """The running stack, with helpers to reconfigure its two providers and to ask it."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.log = DispatcherLog(stack)
        self.oai = openai.OpenAI(base_url=stack.base_url, api_key=API_KEY, max_retries=0)

    def reset(self, a: ProviderSpec | None = None, b: ProviderSpec | None = None) -> None:
        """Restart both providers as given (defaults: healthy); wait until both serve."""
        specs = [a or spec("sim-a"), b or spec("sim-b")]
        for s in specs:
            self.stack.kill(s.name)
        self.stack.wait_providers([s.name for s in specs], online=False)
        for s in specs:
            self.stack.start_provider(s, wait=False)
        self.stack.wait_providers([s.name for s in specs])

    def chat(
        self,
        *,
        stream: bool,
        tools: bool = False,
        only: tuple[str, ...] = (),
        max_tokens: int = 6,
        content: str = "Say hello",
    ) -> Reply:
        """One chat request: raw SSE through httpx when streaming, else the openai SDK.
        Returns once the registry has processed every Release of it (see `settle`)."""
        rid = f"failover-{next(_ids)}"
        messages = [{"role": "user", "content": content}]
        extra: dict[str, Any] = {"provider": {"only": list(only)}} if only else {}
        tool_args: dict[str, Any] = {"tools": [WEATHER_TOOL]} if tools else {}
        if stream:
            body = {
                "model": MODEL,
                "stream": True,
                "max_tokens": max_tokens,
                "messages": messages,
                **tool_args,
                **extra,
            }
            r = httpx.post(
                f"{self.stack.base_url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {API_KEY}", "X-Request-Id": rid},
                timeout=30,  # does-not-hang bound
            )
            headers = dict(r.headers)
            self.settle()
            if r.status_code != 200:
                return Reply(r.status_code, headers, rid, error=r.json()["error"])
            assert headers["content-type"].startswith("text/event-stream")
            return Reply(200, headers, rid, sse=Sse.parse(r.text))
        try:
            raw = self.oai.chat.completions.with_raw_response.create(
                model=MODEL,
                max_tokens=max_tokens,
                messages=messages,  # type: ignore[arg-type]
                extra_headers={"X-Request-Id": rid},
                extra_body=extra or None,
                timeout=30,
                **tool_args,
            )
        except openai.APIStatusError as exc:
            self.settle()
            return Reply(exc.status_code, dict(exc.response.headers), rid, **_error(exc.response))
        self.settle()
        return Reply(raw.status_code, dict(raw.headers), rid, completion=raw.parse())

    def settle(self) -> None:
        """Wait until no slot is held. A Release frees the slot and feeds the breaker in one
        registry call, so afterwards cooldowns and Explain reflect every finished attempt."""
        assert wait_idle(self.stack).slots_in_use == 0, "a reservation was never released"

    def attempts(self, reply: Reply) -> list[AttemptLog]:
        """The request's dispatch attempts, once every one of them has been released."""
        return self.log.wait_attempts(reply.request_id, all_released)

    def cooldowns(self) -> int:
        return int(self.stack.registry_stats().cooldowns_entered)


def _error(response: httpx.Response) -> dict[str, Any]:
    return {"error": response.json()["error"]}


def providers(attempts: list[AttemptLog]) -> list[tuple[str, list[int]]]:
    """(provider, Release statuses) per attempt, in dispatch order."""
    return [(a.provider, a.released) for a in attempts]


def assert_clean_success(reply: Reply, provider: str, *, words: int) -> None:
    """200 from `provider`, one clean answer of `words` words, nothing from anyone else."""
    assert reply.status == 200, reply.error
    assert reply.provider == provider
    if reply.sse is not None:
        sse = reply.sse
        assert sse.done == 1 and sse.done_last, "exactly one [DONE], at the end (A9)"
        assert sse.errors == [], "a pre-content failure must be invisible (B2)"
        assert len(sse.chunk_ids) == 1, "every chunk comes from one provider's response"
        assert sse.chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert len(sse.text.split()) == words
    else:
        message = reply.completion.choices[0].message
        assert len((message.content or "").split()) == words


def assert_tool_call(reply: Reply) -> None:
    if reply.sse is not None:
        calls = [
            call
            for c in reply.sse.chunks
            if c["choices"]
            for call in c["choices"][0]["delta"].get("tool_calls") or []
        ]
        assert calls and calls[0]["function"]["name"] == "get_weather"
        assert reply.sse.chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
        assert reply.sse.done == 1 and reply.sse.errors == []
    else:
        choice = reply.completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls[0].function.name == "get_weather"


# --- a fleet without the speculative race: every dispatch is a primary ----------------

STEADY_ENV = {
    **FAST_ENV,
    "HEDGEROW_SPECULATIVE_RATIO": "1",  # >= 1 disables the backup
    "HEDGEROW_TTFT_BASE_S": "2.5",
    "HEDGEROW_TTFT_PER_TOKEN_S": "0",
    "HEDGEROW_PREAMBLE_CONTENT_TIMEOUT_S": "0.5",
    "HEDGEROW_INFERENCE_TIMEOUT_S": "2.5",
}


@pytest.fixture(scope="module")
def steady_stack() -> Iterator[Stack]:
    with Stack([spec("sim-a"), spec("sim-b")], env=STEADY_ENV) as s:
        yield s


@pytest.fixture
def fleet(steady_stack: Stack) -> Iterator[Fleet]:
    yield Fleet(steady_stack)
    # B12: whatever the test did, every reservation came back.
    assert wait_idle(steady_stack).slots_in_use == 0


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder whose chat template does not compile (E3: template_render_ok=false)."""
    root = tmp_path_factory.mktemp("broken-models")
    shutil.copytree(MODELS_DIR / MODEL, root / MODEL)
    (root / MODEL / "chat_template.jinja").write_text(
        "{% for message in messages %}{{ message['content'] }\n"
    )
    return root


@STREAM
def test_b2_error_after_role_chunk_fails_over_invisibly(fleet: Fleet, stream: bool) -> None:
    fleet.reset(a=spec("sim-a", "error_before_content"))
    reply = fleet.chat(stream=stream)
    assert_clean_success(reply, "sim-b", words=6)
    assert reply.headers["x-attempts"] == "2"
    attempts = fleet.attempts(reply)
    assert providers(attempts) == [("sim-a", [500]), ("sim-b", [200])]
    assert not any(a.backup for a in attempts)


@STREAM
def test_b2_disconnect_after_role_chunk_fails_over_invisibly(fleet: Fleet, stream: bool) -> None:
    fleet.reset(a=spec("sim-a", "disconnect_after_preamble"))
    reply = fleet.chat(stream=stream)
    assert_clean_success(reply, "sim-b", words=6)
    assert reply.headers["x-attempts"] == "2"
    assert providers(fleet.attempts(reply)) == [("sim-a", [502]), ("sim-b", [200])]


@STREAM
def test_b3_error_after_content_is_in_band_and_never_retried(fleet: Fleet, stream: bool) -> None:
    fleet.reset(a=spec("sim-a", "error_after_content", HEDGEROW_SIM_FAULT_AFTER_CHUNKS="2"))
    reply = fleet.chat(stream=stream)
    if stream:
        assert reply.status == 200 and reply.provider == "sim-a"
        assert reply.headers["x-attempts"] == "1"
        assert reply.sse is not None
        sse = reply.sse
        assert len(sse.text.split()) == 2, "the content already sent stays, never duplicated"
        assert len(sse.errors) == 1 and sse.index_of_error() == len(sse.payloads) - 1
        assert sse.done == 1 and sse.done_last
        assert len(sse.chunk_ids) == 1
    else:
        # Nothing was written yet, so the honest answer is an HTTP error, not a retry.
        assert reply.status == 500 and reply.error["code"] == "provider_error"
    assert providers(fleet.attempts(reply)) == [("sim-a", [500])], "sim-b is never dispatched"


@STREAM
def test_b4_role_then_clean_complete_is_an_empty_completion(fleet: Fleet, stream: bool) -> None:
    fleet.reset(a=spec("sim-a", "empty_after_preamble"))
    reply = fleet.chat(stream=stream)
    assert reply.status == 200 and reply.provider == "sim-a"
    assert reply.headers["x-attempts"] == "1"
    if reply.sse is not None:
        sse = reply.sse
        assert sse.text == "" and sse.errors == []
        assert sse.done == 1 and sse.done_last
        assert sse.chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert sse.chunks[-1]["choices"][0]["finish_reason"] == "stop"
    else:
        choice = reply.completion.choices[0]
        assert not choice.message.content and choice.finish_reason == "stop"
    assert providers(fleet.attempts(reply)) == [("sim-a", [200])]


def test_b9_two_500s_cool_the_provider_and_the_third_goes_straight_to_the_other(
    fleet: Fleet,
) -> None:
    fleet.reset(a=spec("sim-a", "error_before_content"))
    before = fleet.cooldowns()
    first, second, third = (fleet.chat(stream=s) for s in (True, False, True))
    for reply in (first, second, third):
        assert_clean_success(reply, "sim-b", words=6)
    assert [r.headers["x-attempts"] for r in (first, second, third)] == ["2", "2", "1"]
    assert providers(fleet.attempts(first)) == [("sim-a", [500]), ("sim-b", [200])]
    assert providers(fleet.attempts(second)) == [("sim-a", [500]), ("sim-b", [200])]
    assert providers(fleet.attempts(third)) == [("sim-b", [200])]
    assert fleet.cooldowns() == before + 1
    reasons = explain(fleet.stack, MODEL)
    assert "cooling_down_until" in reasons["sim-a"] and reasons["sim-b"] == []


def test_b7_preamble_then_stall_fails_over_after_the_preamble_budget_with_504_strikes(
    fleet: Fleet,
) -> None:
    fleet.reset(a=spec("sim-a", "stall_after_preamble"))
    before = fleet.cooldowns()
    for stream in (True, False):
        reply = fleet.chat(stream=stream)
        assert_clean_success(reply, "sim-b", words=6)
        assert reply.headers["x-attempts"] == "2"
        stalled, fallback = fleet.attempts(reply)
        assert (stalled.provider, stalled.released, stalled.cancelled) == ("sim-a", [504], True)
        assert (fallback.provider, fallback.released) == ("sim-b", [200])
    # Two 504 strikes within the window: the stalling provider is cooled (B9, C4).
    assert fleet.cooldowns() == before + 1
    assert "cooling_down_until" in explain(fleet.stack, MODEL)["sim-a"]


def test_b9_post_commit_stall_is_an_in_band_timeout_and_a_504_strike(fleet: Fleet) -> None:
    # One token, then a gap far longer than the (shrunk) inference timeout.
    fleet.reset(a=spec("sim-a", HEDGEROW_SIM_TOKENS_PER_S="0.15"))
    before = fleet.cooldowns()
    streamed = fleet.chat(stream=True, max_tokens=4)
    assert streamed.status == 200 and streamed.provider == "sim-a"
    assert streamed.sse is not None
    sse = streamed.sse
    assert len(sse.text.split()) == 1
    assert len(sse.errors) == 1 and sse.errors[0]["status"] == 504
    assert sse.index_of_error() == len(sse.payloads) - 1 and sse.done == 1 and sse.done_last
    assembled = fleet.chat(stream=False, max_tokens=4)
    assert assembled.status == 504
    for reply in (streamed, assembled):
        (only,) = fleet.attempts(reply)
        assert (only.provider, only.released, only.cancelled) == ("sim-a", [504], True)
    assert fleet.cooldowns() == before + 1, "two post-commit 504s are two strikes"


# --- capability gates (A6, C1) and the tools-shaped breaker (C4) -----------------------


def test_a6_tools_request_skips_a_provider_below_the_floor(fleet: Fleet) -> None:
    fleet.reset(a=spec("sim-a", version="0.6.2"))
    assert "below_floor" in explain(fleet.stack, MODEL, tools=True)["sim-a"]
    for stream in (True, False):
        reply = fleet.chat(stream=stream, tools=True)
        assert reply.status == 200 and reply.provider == "sim-b"
        assert_tool_call(reply)
        assert providers(fleet.attempts(reply)) == [("sim-b", [200])]
    plain = fleet.chat(stream=False)
    assert_clean_success(plain, "sim-a", words=6)  # the floor is for tools only


def test_c1_tools_request_skips_a_provider_whose_template_does_not_render(
    fleet: Fleet, broken_models: Path
) -> None:
    fleet.reset(a=spec("sim-a", models_dir=broken_models))
    assert "template_broken" in explain(fleet.stack, MODEL, tools=True)["sim-a"]
    for stream in (True, False):
        reply = fleet.chat(stream=stream, tools=True)
        assert reply.status == 200 and reply.provider == "sim-b"
        assert_tool_call(reply)
        assert providers(fleet.attempts(reply)) == [("sim-b", [200])]
    # template_render_ok=false fences every shape, plain chat too.
    assert_clean_success(fleet.chat(stream=True), "sim-b", words=6)


def test_a6_tools_request_with_no_capable_provider_is_503_at_once(fleet: Fleet) -> None:
    fleet.reset(a=spec("sim-a", version="0.6.2"), b=spec("sim-b", version="0.6.2"))
    sent = sent_total(fleet.stack)
    for stream in (True, False):
        reply = fleet.chat(stream=stream, tools=True)
        assert reply.status == 503
        assert reply.error["code"] == "model_unavailable"
        assert TOOLS_FLOOR in reply.error["message"] and "template" in reply.error["message"]
        assert fleet.log.attempts(reply.request_id) == []
    assert sent_total(fleet.stack) == sent, "refused at admission: zero dispatches"
    assert_clean_success(fleet.chat(stream=False), "sim-a", words=6)


def test_a6_anthropic_messages_tools_with_no_capable_provider_is_503_at_once(
    fleet: Fleet,
) -> None:
    fleet.reset(a=spec("sim-a", version="0.6.2"), b=spec("sim-b", version="0.6.2"))
    claude = anthropic.Anthropic(
        base_url=fleet.stack.base_url.removesuffix("/v1"), api_key=API_KEY, max_retries=0
    )
    tool = {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
    }
    sent = sent_total(fleet.stack)
    for stream in (True, False):
        with pytest.raises(anthropic.APIStatusError) as caught:
            claude.messages.create(
                model=MODEL,
                max_tokens=8,
                messages=[{"role": "user", "content": "Weather in Paris?"}],
                tools=[tool],  # type: ignore[list-item]
                stream=stream,
            )
        assert caught.value.status_code == 503
        body = caught.value.response.json()
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
        assert TOOLS_FLOOR in body["error"]["message"]
    assert sent_total(fleet.stack) == sent, "refused at admission: zero dispatches"


def test_a6_allowlisted_tools_request_whose_only_provider_is_below_the_floor_is_503(
    fleet: Fleet,
) -> None:
    fleet.reset(a=spec("sim-a", version="0.6.2"))
    sent = sent_total(fleet.stack)
    for stream in (True, False):
        reply = fleet.chat(stream=stream, tools=True, only=("sim-a",))
        assert reply.status == 503 and reply.error["code"] == "model_unavailable"
        assert fleet.log.attempts(reply.request_id) == []
    assert sent_total(fleet.stack) == sent, "never dispatched, never queued"
    # The allowlist itself works: plain chat may use sim-a, tools may use sim-b.
    assert_clean_success(fleet.chat(stream=False, only=("sim-a",)), "sim-a", words=6)
    allowed = fleet.chat(stream=False, tools=True, only=("sim-b",))
    assert allowed.status == 200 and allowed.provider == "sim-b"


def test_c4_tool_only_failures_cool_tools_while_plain_requests_still_reach_the_provider(
    fleet: Fleet,
) -> None:
    fleet.reset(a=spec("sim-a", "template_crash"))
    before = fleet.cooldowns()
    for stream in (True, False):
        reply = fleet.chat(stream=stream, tools=True)
        assert reply.status == 200 and reply.provider == "sim-b"
        assert_tool_call(reply)
        assert providers(fleet.attempts(reply)) == [("sim-a", [500]), ("sim-b", [200])]
    assert fleet.cooldowns() == before + 1
    assert "cooling_down_until" in explain(fleet.stack, MODEL, tools=True)["sim-a"]
    assert explain(fleet.stack, MODEL)["sim-a"] == [], "only the tools shape is cooled"
    plain = fleet.chat(stream=True)
    assert_clean_success(plain, "sim-a", words=6)
    assert providers(fleet.attempts(plain)) == [("sim-a", [200])]
    # The plain success cleared only its own shape: tools still skip sim-a.
    tools = fleet.chat(stream=False, tools=True)
    assert tools.status == 200 and tools.provider == "sim-b"
    assert providers(fleet.attempts(tools)) == [("sim-b", [200])]
    assert "cooling_down_until" in explain(fleet.stack, MODEL, tools=True)["sim-a"]


# --- the speculative race (B5) ----------------------------------------------------------

RACE_ENV = {
    **FAST_ENV,
    "HEDGEROW_TTFT_BASE_S": "1.6",
    "HEDGEROW_TTFT_PER_TOKEN_S": "0",
    "HEDGEROW_SPECULATIVE_RATIO": "0.25",  # the backup goes out 0.4 s after the primary
    "HEDGEROW_PREAMBLE_CONTENT_TIMEOUT_S": "0.5",
    "HEDGEROW_INFERENCE_TIMEOUT_S": "2",
}
SLOW = {"HEDGEROW_SIM_SLOW_START_S": "1.4"}  # first content 1 s after the backup went out


@pytest.fixture(scope="module")
def race_stack() -> Iterator[Stack]:
    with Stack([spec("sim-a"), spec("sim-b")], env=RACE_ENV) as s:
        yield s


@pytest.fixture
def race(race_stack: Stack) -> Iterator[Fleet]:
    yield Fleet(race_stack)
    assert wait_idle(race_stack).slots_in_use == 0


def _race_counters(stack: Stack) -> tuple[float, float]:
    c = dispatcher_counters(stack)
    return (
        c.get("dispatcher_speculative_dispatches_total", 0.0),
        c.get("dispatcher_speculative_wins_total", 0.0),
    )


@STREAM
def test_b5_slow_primary_loses_to_the_backups_first_content(race: Fleet, stream: bool) -> None:
    race.reset(a=spec("sim-a", "slow_start", **SLOW))
    backups, wins = _race_counters(race.stack)
    reply = race.chat(stream=stream)
    assert_clean_success(reply, "sim-b", words=6)
    assert reply.headers["x-attempts"] == "2"
    primary, backup = race.attempts(reply)
    assert (primary.provider, primary.backup, primary.cancelled) == ("sim-a", False, True)
    assert primary.released == [CANCELLED], "the loser is cancelled, not blamed"
    assert (backup.provider, backup.backup, backup.released) == ("sim-b", True, [200])
    assert _race_counters(race.stack) == (backups + 1, wins + 1)


@STREAM
def test_b5_backup_preamble_alone_does_not_win(race: Fleet, stream: bool) -> None:
    race.reset(a=spec("sim-a", "slow_start", **SLOW), b=spec("sim-b", "stall_after_preamble"))
    backups, wins = _race_counters(race.stack)
    reply = race.chat(stream=stream)
    assert_clean_success(reply, "sim-a", words=6)
    primary, backup = race.attempts(reply)
    assert (primary.provider, primary.released) == ("sim-a", [200])
    assert (backup.provider, backup.backup, backup.cancelled) == ("sim-b", True, True)
    assert backup.released == [CANCELLED]
    assert _race_counters(race.stack) == (backups + 1, wins)


def test_b9_racers_holding_only_preamble_both_strike_at_the_race_deadline(race: Fleet) -> None:
    race.reset(a=spec("sim-a", "stall_after_preamble"), b=spec("sim-b", "stall_after_preamble"))
    before = race.cooldowns()
    for stream in (True, False):
        reply = race.chat(stream=stream)
        assert reply.status == 504 and reply.error["code"] == "timeout"
        primary, backup = race.attempts(reply)
        assert (primary.provider, primary.released, primary.cancelled) == ("sim-a", [504], True)
        assert (backup.provider, backup.released, backup.cancelled) == ("sim-b", [504], True)
        assert backup.backup
    # Each racer struck twice: both are cooled for plain chat.
    assert race.cooldowns() == before + 2
    reasons = explain(race.stack, MODEL)
    assert "cooling_down_until" in reasons["sim-a"] and "cooling_down_until" in reasons["sim-b"]


@STREAM
def test_b12_client_disconnect_mid_race_cancels_both_and_returns_every_slot(
    race: Fleet, stream: bool
) -> None:
    slow = {"HEDGEROW_SIM_SLOW_START_S": "30"}
    race.reset(a=spec("sim-a", "slow_start", **slow), b=spec("sim-b", "slow_start", **slow))
    rid = f"failover-gone-{next(_ids)}"
    body = json.dumps(
        {
            "model": MODEL,
            "stream": stream,
            "max_tokens": 6,
            "messages": [{"role": "user", "content": "Say hello"}],
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {API_KEY}\r\nX-Request-Id: {rid}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", race.stack.ports.gateway), timeout=10) as sock:
        sock.sendall(head + body)
        racing = race.log.wait_attempts(rid, lambda a: len(a) == 2)
        assert [(a.provider, a.backup) for a in racing] == [("sim-a", False), ("sim-b", True)]
        assert not any(a.released for a in racing), "nothing may have ended before the client"
    # The client is gone before either racer produced content or hit a deadline.
    attempts = race.log.wait_attempts(rid, lambda a: len(a) == 2 and all_released(a))
    assert [(a.provider, a.cancelled, a.released) for a in attempts] == [
        ("sim-a", True, [CANCELLED]),
        ("sim-b", True, [CANCELLED]),
    ]
    assert wait_idle(race.stack).slots_in_use == 0
