"""The provider agent's link client against an in-test dispatcher (E1, E4, E5, F1, F2).

`FakeDispatcher` speaks the dispatcher's side of the link over a real WebSocket and
records every frame with its arrival time; the agent is the real `LinkClient` with the
real request handler, model scan and sim engine. One test also runs the agent against
the real `dispatcher_svc.link.LinkServer`, so the fake cannot drift from the product.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import shutil
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.link import MAX_CHUNK_BYTES, MAX_MODEL_ID_CHARS, MAX_MODELS_PER_PROVIDER
from contract.sealing import KeyPair, SealedChannel
from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.link import LinkChunk, LinkComplete, LinkError, LinkServer, ProviderSession
from provider_agent.advertise import advertised
from provider_agent.config import AgentConfig, SimSettings
from provider_agent.engines.base import Engine, EngineOutput, Finished, GenerateRequest
from provider_agent.engines.sim import SimEngine
from provider_agent.handler import RequestHandler
from provider_agent.link import Backoff, LinkClient, SessionEnd
from provider_agent.main import build_agent
from provider_agent.scan import scan_models
from provider_agent.templates import Strictness
from tests.fakes.link_dispatcher import TOKEN, FakeDispatcher, Received, Session

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "fixtures" / "templates"
SIM_MODEL = REPO / "stack" / "models" / "hedgerow-sim-1"
PICKY = """{%- for message in messages -%}
{%- if 'forbidden' in message['content'] -%}
{{ raise_exception('picky template refuses the word forbidden') }}
{%- endif -%}
<|{{ message['role'] }}|>{{ message['content'] }}
{% endfor -%}
{%- if add_generation_prompt -%}<|assistant|>{% endif -%}
"""
CONFIG_JSON = json.dumps({"model_type": "test"})
MODEL = "hedgerow-sim-1"


def make_models(root: Path) -> Path:
    """A model folder per verdict the agent must advertise."""
    shutil.copytree(SIM_MODEL, root / MODEL)
    for name, template in (
        ("broken-1", (TEMPLATES / "broken_syntax.jinja").read_text()),
        ("incident-1", (TEMPLATES / "incident_tool_args.jinja").read_text()),
        ("picky-1", PICKY),
        ("notemplate-1", None),
    ):
        folder = root / name
        folder.mkdir()
        (folder / "config.json").write_text(CONFIG_JSON)
        if template is not None:
            (folder / "chat_template.jinja").write_text(template)
    return root


def agent_config(url: str, **overrides: Any) -> AgentConfig:
    sim = overrides.pop("sim", SimSettings(ttft_s=0.0, tokens_per_s=1000.0))
    values: dict[str, Any] = dict(
        dispatcher_url=url,
        token=TOKEN,
        provider_id="agent-under-test",
        version="0.7.1",
        max_concurrency=3,
        decode_tps=111.0,
        prefill_tps=2222.0,
        hardware="test-gpu",
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        heartbeat_interval_s=0.05,
        sim=sim,
    )
    values.update(overrides)
    return AgentConfig(**values)


class Agent:
    """A running LinkClient; `stop()` is idempotent."""

    def __init__(self, client: LinkClient, task: asyncio.Task[None]) -> None:
        self.client = client
        self.task = task

    async def stop(self) -> None:
        await self.client.stop()
        await asyncio.wait_for(self.task, 5)


AgentFactory = Callable[..., Agent]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDispatcher]:
    async with FakeDispatcher() as dispatcher:
        yield dispatcher


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[AgentFactory]:
    root = make_models(tmp_path / "models")
    cards = {c.id: c for c in scan_models(root)}
    agents: list[Agent] = []

    def start(url: str, engine: Engine | None = None, **overrides: Any) -> Agent:
        config = agent_config(url, **overrides)
        handler = RequestHandler(cards, engine or SimEngine(config.sim), Strictness.STRICT)
        client = LinkClient(config, handler, rng=random.Random(1))
        agent = Agent(client, asyncio.create_task(client.run_forever()))
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        if not agent.task.done():
            await agent.stop()


def chat(text: str = "hello", model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def opened(frames: list[Received], channel: SealedChannel) -> list[dict[str, Any]]:
    return [
        json.loads(channel.open(sealed))
        for f in frames
        if f.kind == "chunk"
        for sealed in f.frame.chunk.sealed
    ]


def content_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0].get("delta", {}).get("content") or "" for c in chunks)


async def heartbeat_where(
    session: Session, predicate: Callable[[dict[str, tuple[int, int]]], bool]
) -> dict[str, tuple[int, int]]:
    """The first heartbeat whose {model: (running, waiting)} satisfies `predicate`."""
    async with asyncio.timeout(5):
        while True:
            got = await session.next("heartbeat")
            loads = {x.model: (x.running, x.waiting) for x in got.frame.heartbeat.loads}
            if predicate(loads):
                return loads


# --- registration and the challenge (E1, F1) --------------------------------------------


async def test_e1_register_frame_carries_version_key_and_tristate_model_flags(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    agent = start_agent(fake.url)
    session = await fake.session()
    reg = session.register
    assert reg.provider_id == "agent-under-test"
    assert reg.version == "0.7.1"
    assert reg.enrollment_token == TOKEN
    assert reg.hardware == "test-gpu"
    assert (reg.decode_tps, reg.prefill_tps) == (111.0, 2222.0)
    assert bytes(reg.public_key) == agent.client.public_key and len(reg.public_key) == 32

    # Re-parse the wire bytes: what matters is what a dispatcher decodes.
    wire = link_pb2.Register.FromString(reg.SerializeToString())
    models = {m.id: m for m in wire.models}
    assert set(models) == {MODEL, "broken-1", "incident-1", "picky-1", "notemplate-1"}
    assert all(m.max_concurrency == 3 and not m.is_vision for m in models.values())

    good = models[MODEL]
    assert good.HasField("template_render_ok") and good.template_render_ok
    assert good.HasField("cap_tools") and good.cap_tools
    assert good.HasField("cap_system") and good.cap_system
    assert not good.HasField("cap_vision"), "vision is unknown (absent) for a text model"

    broken = models["broken-1"]
    assert broken.HasField("template_render_ok"), "false MUST be encoded, not left absent"
    assert broken.template_render_ok is False

    incident = models["incident-1"]
    assert incident.HasField("template_render_ok") and incident.template_render_ok
    assert incident.HasField("cap_tools") and incident.cap_tools is False

    none = models["notemplate-1"]
    for flag in ("template_render_ok", "cap_system", "cap_tools", "cap_vision"):
        assert not none.HasField(flag), f"{flag} must be absent when there is no template"


async def test_f1_challenges_answered_with_the_providers_key(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    start_agent(fake.url)
    session = await fake.session()
    assert session.challenge_ok, "the connect-time challenge opens with the registered key"
    for _ in range(2):  # periodic re-challenges mid-session
        nonce = await session.challenge()
        answer = await session.next("challenge_response")
        assert session.opens_to(answer.frame.challenge_response.sealed_nonce, nonce)
        impostor = KeyPair.generate()
        with pytest.raises(ValueError):
            SealedChannel(impostor, bytes(session.register.public_key)).open(
                answer.frame.challenge_response.sealed_nonce
            )


async def test_f1_wrong_enrollment_token_logs_and_backs_off(
    fake: FakeDispatcher, start_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="provider_agent.link")
    agent = start_agent(fake.url, token="not-the-token")
    await asyncio.sleep(1.2)
    assert not agent.task.done(), "a rejected agent keeps running (it may be enrolled later)"
    assert fake.sessions.empty()
    # Backoff 0.05 s doubling to 0.2 s: about a dozen tries at most in 1.2 s; a reconnect
    # loop at full speed would make hundreds.
    assert 3 <= fake.rejected <= 20, fake.rejected
    assert agent.client.sessions[SessionEnd.REJECTED] >= 3
    rejected = [r for r in caplog.records if "rejected registration" in r.getMessage()]
    assert rejected and rejected[0].levelno == logging.ERROR
    assert getattr(rejected[0], "reason", "") == "invalid enrollment token"


def test_backoff_is_exponential_jittered_capped_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    for n, delay in enumerate(delays):
        ceiling = min(1.0, 0.1 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays), "jittered, never a fixed beat"
    backoff.reset()
    assert 0.05 <= backoff.next_delay() <= 0.1
    firsts = {Backoff(0.1, 1.0, random.Random(seed)).next_delay() for seed in range(20)}
    assert len(firsts) == 20, "providers reconnecting together spread out"


# --- heartbeats (E1) ----------------------------------------------------------------------


async def test_e1_heartbeats_carry_running_and_waiting_per_model(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    slow = SimSettings(ttft_s=0.0, tokens_per_s=50.0, default_max_tokens=100_000)
    start_agent(fake.url, max_concurrency=1, sim=slow)
    session = await fake.session()
    idle = await heartbeat_where(session, lambda loads: True)
    assert set(idle) == {MODEL, "broken-1", "incident-1", "picky-1", "notemplate-1"}
    assert set(idle.values()) == {(0, 0)}
    beat = next(r for r in reversed(session.log) if r.kind == "heartbeat")
    assert {x.max_concurrency for x in beat.frame.heartbeat.loads} == {1}

    first, _ = await session.request(chat("one"))
    second, _ = await session.request(chat("two"))
    busy = await heartbeat_where(session, lambda loads: loads[MODEL] == (1, 1))
    assert busy["picky-1"] == (0, 0)
    # max_concurrency=1: the waiting request sends nothing until the first one ends.
    assert not [r for r in session.log if r.kind == "chunk" and r.frame.chunk.request_id == second]

    await session.cancel(first)
    await heartbeat_where(session, lambda loads: loads[MODEL] == (1, 0))
    second_chunks = await session.next("chunk")
    assert second_chunks.frame.chunk.request_id == second
    await session.cancel(second)
    await heartbeat_where(session, lambda loads: loads[MODEL] == (0, 0))


# --- requests (E4, F2) ---------------------------------------------------------------------


async def test_e4_request_streams_sealed_chunks_then_complete(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    start_agent(fake.url)
    session = await fake.session()
    rid, channel = await session.request(chat(max_tokens=4))
    frames = await session.for_request(rid)
    # Chunks ready together may share a frame; each is still one chunk, in order.
    assert [f.kind for f in frames[:-1]] == ["chunk"] * (len(frames) - 1)
    assert frames[-1].kind == "complete"
    chunks = opened(frames, channel)
    assert len(chunks) == 6, "role, 4 tokens, finish"
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    assert len(content_of(chunks).split()) == 4
    usage = frames[-1].frame.complete.usage
    assert usage.completion_tokens == 4 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + 4


async def test_f2_request_sealed_to_another_key_is_a_400_error_frame(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    start_agent(fake.url)
    session = await fake.session()
    rid, _ = await session.request(chat(), seal_to=KeyPair.generate().public_bytes)
    (frame,) = await session.for_request(rid)
    assert frame.kind == "error"
    assert frame.frame.error.status_code == 400
    assert "sealed" in frame.frame.error.message


async def test_e4_template_render_failure_is_a_500_with_the_templates_message(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    start_agent(fake.url)
    session = await fake.session()
    rid, _ = await session.request(chat("a forbidden word", model="picky-1"))
    (frame,) = await session.for_request(rid)
    assert frame.kind == "error" and frame.frame.error.status_code == 500
    assert "picky template refuses the word forbidden" in frame.frame.error.message

    # The incident class: dict tool-call arguments hit `| trim` on the tool flow.
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look it up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
    body = {
        "model": "incident-1",
        "tools": [tool],
        "messages": [
            {"role": "user", "content": "find x"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": "found"},
        ],
    }
    rid, _ = await session.request(body)
    (frame,) = await session.for_request(rid)
    assert frame.kind == "error" and frame.frame.error.status_code == 500
    assert "trim filter requires string" in frame.frame.error.message

    # The same model still serves plain chat.
    rid, _ = await session.request(chat("fine", model="incident-1", max_tokens=2))
    frames = await session.for_request(rid)
    assert frames[-1].kind == "complete"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (chat(model="no-such-model"), 404),
        ({"model": MODEL, "messages": "hi"}, 400),
        ({"model": MODEL, "messages": ["hi", 3]}, 400),
        ([1, 2], 400),
    ],
)
async def test_e4_bad_requests_get_a_4xx_error_frame(
    fake: FakeDispatcher, start_agent: AgentFactory, body: Any, status: int
) -> None:
    start_agent(fake.url)
    session = await fake.session()
    rid, _ = await session.request(body)
    (frame,) = await session.for_request(rid)
    assert frame.kind == "error" and frame.frame.error.status_code == status


async def test_b6_cold_model_sends_accepted_first_and_only_once(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    start_agent(fake.url, sim=SimSettings(ttft_s=0.0, tokens_per_s=1000.0, cold_load_s=0.05))
    session = await fake.session()
    rid, _ = await session.request(chat(max_tokens=2))
    frames = await session.for_request(rid)
    assert frames[0].kind == "accepted" and frames[-1].kind == "complete"
    rid, _ = await session.request(chat(max_tokens=2))
    frames = await session.for_request(rid)
    assert "accepted" not in [f.kind for f in frames], "warm now: no Accepted"


# --- Cancel (E5) ------------------------------------------------------------------------


async def test_e5_cancel_stops_a_long_generation_within_100ms(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    fast = SimSettings(ttft_s=0.0, tokens_per_s=200.0, default_max_tokens=100_000)
    start_agent(fake.url, sim=fast)
    session = await fake.session()
    rid, _ = await session.request(chat("a very long story"))
    for _ in range(5):
        got = await session.next("chunk")
        assert got.frame.chunk.request_id == rid
    cancelled_at = await session.cancel(rid)
    await asyncio.sleep(0.5)  # without Cancel this is ~100 more chunks
    late = [
        r.at - cancelled_at
        for r in session.log
        if r.at > cancelled_at and r.kind in ("chunk", "complete", "error")
    ]
    assert all(delay <= 0.1 for delay in late), f"frames after Cancel: {late}"
    assert not [r for r in session.log if r.kind in ("complete", "error")]
    await heartbeat_where(session, lambda loads: loads[MODEL] == (0, 0))


# --- failures of the engine and of the link ------------------------------------------------


class _BrokenEngine:
    """Yields one chunk then fails in a way no engine should (a bug), or just ends."""

    def __init__(self, *, crash: bool) -> None:
        self._crash = crash

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[EngineOutput, None]:
        yield b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}'
        if self._crash:
            raise RuntimeError("engine bug")

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(("crash", "status"), [(True, 500), (False, 502)])
async def test_engine_bug_or_unfinished_stream_still_ends_the_attempt(
    fake: FakeDispatcher, start_agent: AgentFactory, crash: bool, status: int
) -> None:
    start_agent(fake.url, engine=_BrokenEngine(crash=crash))
    session = await fake.session()
    rid, _ = await session.request(chat())
    frames = await session.for_request(rid)
    assert [f.kind for f in frames] == ["chunk", "error"]
    assert frames[-1].frame.error.status_code == status
    rid, _ = await session.request(chat())  # the link survives
    assert (await session.for_request(rid))[-1].kind == "error"


async def test_malformed_dispatcher_frame_reconnects_instead_of_crashing(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    agent = start_agent(fake.url)
    first = await fake.session()
    await first.ws.send(b"\xff\xff\xff not a frame")
    second = await fake.session()
    assert not agent.task.done()
    await asyncio.wait_for(first.closed.wait(), 5)
    rid, _ = await second.request(chat(max_tokens=1))
    assert (await second.for_request(rid))[-1].kind == "complete"


async def test_disconnect_fault_drops_the_link_then_rejoins(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    start_agent(fake.url)
    first = await fake.session()
    rid, _ = await first.request(chat("[[sim:fault=disconnect_after_preamble]]"))
    await asyncio.wait_for(first.closed.wait(), 5)
    assert [r.kind for r in first.log if r.kind in ("complete", "error")] == []
    second = await fake.session()
    rid, _ = await second.request(chat(max_tokens=1))
    assert (await second.for_request(rid))[-1].kind == "complete"


# --- clean stop ---------------------------------------------------------------------------


async def test_e1_clean_stop_says_goodbye_first_and_does_not_reconnect(
    fake: FakeDispatcher, start_agent: AgentFactory
) -> None:
    slow = SimSettings(ttft_s=0.0, tokens_per_s=50.0, default_max_tokens=100_000)
    agent = start_agent(fake.url, sim=slow)
    session = await fake.session()
    await session.request(chat("in flight"))
    await session.next("chunk")
    await agent.stop()
    await asyncio.wait_for(session.closed.wait(), 5)
    kinds = [r.kind for r in session.log]
    assert "goodbye" in kinds
    after = kinds[kinds.index("goodbye") + 1 :]
    assert not [k for k in after if k in ("chunk", "complete", "error")], after
    assert "complete" not in kinds
    await asyncio.sleep(0.3)  # longer than the largest backoff
    assert len(fake.attempts) == 1, "a stopped agent does not dial again"


# --- interop with the real dispatcher link ------------------------------------------------


class RecordingRegistry:
    def __init__(self) -> None:
        self.upserts: list[ProviderSession] = []
        self.removed: list[str] = []
        self.loads: list[dict[str, tuple[int, int]]] = []
        self.changed = asyncio.Event()

    async def upsert(self, session: ProviderSession) -> None:
        self.upserts.append(session)
        self.changed.set()

    async def remove(self, provider_id: str) -> None:
        self.removed.append(provider_id)
        self.changed.set()

    async def report_load(
        self, provider_id: str, loads: list[link_pb2.ModelLoad], trusted: bool
    ) -> None:
        self.loads.append({x.model: (x.running, x.waiting) for x in loads})
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def test_agent_interoperates_with_the_real_dispatcher_link(
    start_agent: AgentFactory,
) -> None:
    registry = RecordingRegistry()
    config = DispatcherConfig(
        link_port=0,
        enrollment_tokens=(TOKEN,),
        heartbeat_interval_s=0.05,
        offline_after_s=2.0,
    )
    server = LinkServer(config, registry)
    port = await server.start()
    try:
        agent = start_agent(f"ws://127.0.0.1:{port}")
        await registry.until(lambda: bool(registry.upserts))
        session = registry.upserts[0]
        assert session.trusted and session.version == "0.7.1"
        flags = {m.id: m for m in session.models}
        assert flags["broken-1"].HasField("template_render_ok")
        assert not flags["broken-1"].template_render_ok
        await registry.until(lambda: bool(registry.loads))
        assert registry.loads[-1][MODEL] == (0, 0)

        attempt = await session.start_attempt(
            "a1", json.dumps(chat(max_tokens=3)).encode(), completions=False
        )
        events = [event async for event in attempt.events()]
        assert isinstance(events[-1], LinkComplete)
        text = content_of([json.loads(e.payload) for e in events if isinstance(e, LinkChunk)])
        assert len(text.split()) == 3
        assert events[-1].usage == common_pb2.Usage(
            prompt_tokens=events[-1].usage.prompt_tokens,
            completion_tokens=3,
            total_tokens=events[-1].usage.prompt_tokens + 3,
        )

        await agent.stop()
        await registry.until(lambda: registry.removed == ["agent-under-test"])
    finally:
        await server.stop()


# --- identity and limits against the real dispatcher link (F4, F5, F8) ---------------------


@pytest.fixture
async def real_link() -> AsyncIterator[tuple[LinkServer, RecordingRegistry, str]]:
    registry = RecordingRegistry()
    config = DispatcherConfig(
        link_port=0, enrollment_tokens=(TOKEN,), heartbeat_interval_s=0.05, offline_after_s=2.0
    )
    server = LinkServer(config, registry)
    port = await server.start()
    try:
        yield server, registry, f"ws://127.0.0.1:{port}"
    finally:
        await server.stop()


async def test_f5_the_key_file_keeps_the_identity_across_agent_starts(
    tmp_path: Path,
    real_link: tuple[LinkServer, RecordingRegistry, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dispatcher binds the id to the key that registered it; a restarted agent must
    come back with the same key (from its key file), and another key is refused the id."""
    _, registry, url = real_link
    models = make_models(tmp_path / "models")
    key_file = tmp_path / "state" / "provider.key"
    config = agent_config(url, model_dir=models, key_file=key_file)

    async def start_and_stop(starts: int) -> bytes:
        """One agent process's life: build (loading the key file), register, stop."""
        client = build_agent(config)
        task = asyncio.create_task(client.run_forever())
        await registry.until(lambda: len(registry.upserts) == starts)
        assert registry.upserts[-1].public_key == client.public_key
        await client.stop()
        await asyncio.wait_for(task, 5)
        await client.handler.engine.aclose()
        await registry.until(lambda: registry.removed == ["agent-under-test"] * starts)
        return client.public_key

    first = await start_and_stop(1)
    assert await start_and_stop(2) == first, "the second start registered with the same key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700

    # Another agent claiming the id with its own key file is refused, and backs off.
    caplog.set_level(logging.INFO, logger="provider_agent.link")
    impostor = build_agent(agent_config(url, model_dir=models, key_file=tmp_path / "other.key"))
    task = asyncio.create_task(impostor.run_forever())
    try:
        async with asyncio.timeout(5):
            for _ in itertools.count():  # the client has no event for a rejection
                if impostor.sessions[SessionEnd.REJECTED]:
                    break
                await asyncio.sleep(0.02)
    finally:
        await impostor.stop()
        await asyncio.wait_for(task, 5)
        await impostor.handler.engine.aclose()
    assert impostor.public_key != first
    assert len(registry.upserts) == 2
    rejected = [r for r in caplog.records if "rejected registration" in r.getMessage()]
    assert getattr(rejected[0], "reason", "") == "provider id bound to another key"


class _SizedEngine:
    """A role chunk, then content chunks of the given sizes (ready together), then done."""

    def __init__(self, sizes: list[int]) -> None:
        self._sizes = sizes

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[EngineOutput, None]:
        role = {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
        yield json.dumps(role).encode()
        for n, size in enumerate(self._sizes):
            text = chr(ord("a") + n) * size
            delta = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
            yield json.dumps(delta).encode()
        yield Finished(prompt_tokens=1, completion_tokens=len(self._sizes))

    async def aclose(self) -> None:
        pass


async def test_f8_the_agent_splits_chunk_frames_at_the_link_cap(
    real_link: tuple[LinkServer, RecordingRegistry, str], start_agent: AgentFactory
) -> None:
    """Chunks ready together share a frame only up to the link's chunk cap: 3 x 600 KiB
    would be one 1.8 MiB frame, which the dispatcher fails (F8)."""
    _, registry, url = real_link
    start_agent(url, engine=_SizedEngine([600 * 1024] * 4))
    await registry.until(lambda: bool(registry.upserts))
    attempt = await registry.upserts[0].start_attempt(
        "big", json.dumps(chat()).encode(), completions=False
    )
    events = [event async for event in attempt.events()]
    assert isinstance(events[-1], LinkComplete), events[-1]
    sizes = [len(e.payload) for e in events if isinstance(e, LinkChunk)]
    assert len(sizes) == 5 and all(s > 600 * 1024 for s in sizes[1:])


async def test_f8_a_chunk_over_the_link_cap_is_an_error_frame_from_the_agent(
    real_link: tuple[LinkServer, RecordingRegistry, str], start_agent: AgentFactory
) -> None:
    _, registry, url = real_link
    start_agent(url, engine=_SizedEngine([MAX_CHUNK_BYTES]))
    await registry.until(lambda: bool(registry.upserts))
    attempt = await registry.upserts[0].start_attempt(
        "huge", json.dumps(chat()).encode(), completions=False
    )
    events = [event async for event in attempt.events()]
    assert isinstance(events[0], LinkChunk), "what came before is still sent"
    last = events[-1]
    assert isinstance(last, LinkError) and last.status == 502
    assert last.message.startswith("chunk of "), last.message


def test_f4_the_agent_leaves_out_models_the_dispatcher_would_refuse(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_models(tmp_path / "models")
    cards = {c.id: c for c in scan_models(root)}
    card = cards[MODEL]
    many = {f"m{n:03d}": card for n in range(MAX_MODELS_PER_PROVIDER + 5)}
    hostile = {"bad model": card, "bad\r\nmodel": card, "x" * (MAX_MODEL_ID_CHARS + 1): card}
    shown = advertised({MODEL: card, **hostile, **many})
    assert MODEL in shown and not set(hostile) & set(shown)
    assert len(shown) == MAX_MODELS_PER_PROVIDER
    assert sum("not advertised" in r.getMessage() for r in caplog.records) == 3 + 6
