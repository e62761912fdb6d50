"""Link security (rules F1-F3) against the real `LinkServer` on 127.0.0.1 port 0.

Providers are real WebSocket clients speaking `provider_link.proto` by hand, so each test
can misbehave exactly once: a wrong token, a wrong key, garbage, oversize or wrongly
sealed frames, silence. The registry is an in-test recording fake (the `RegistryPort`
seam); everything between the socket and that port is the product.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.sealing import KeyPair, SealedChannel, SealError
from dispatcher_svc.config import DispatcherConfig, LinkLimits
from dispatcher_svc.link import (
    Attempt,
    LinkChunk,
    LinkComplete,
    LinkDisconnected,
    LinkError,
    LinkEvent,
    LinkServer,
    ProviderSession,
)

TOKEN = "link-security-token"
MODEL = "hedgerow-sim-1"
WITHIN = 5.0  # generous bound for anything that must happen "soon"; never asserted on
CLOSE_OK = 1000
CLOSE_PROTOCOL = 1002
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


# --- the registry seam --------------------------------------------------------------


class RecordingRegistry:
    """Records every call in order: ("upsert", id, trusted) / ("remove", id) /
    ("load", id, trusted), and in `loads` what each report_load carried, as
    (id, [(model, running, waiting, max_concurrency)]). Each call suspends for `latency_s`
    first, as the real one (a gRPC call) does."""

    latency_s = 0.002
    untrust_latency_s = 0.05  # the urgent call may well be the slow one

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.loads: list[tuple[str, list[tuple[str, int, int, int]]]] = []
        self.sessions: list[ProviderSession] = []
        self.upsert_gate: asyncio.Event | None = None  # set by a test to stall upserts
        self.upsert_entered = asyncio.Event()
        self._changed = asyncio.Event()

    async def upsert(self, session: ProviderSession) -> None:
        await asyncio.sleep(self.latency_s)
        self.upsert_entered.set()
        if self.upsert_gate is not None:
            await self.upsert_gate.wait()
        self.sessions.append(session)
        self._record("upsert", session.provider_id, session.trusted)

    async def remove(self, provider_id: str) -> None:
        await asyncio.sleep(self.latency_s)
        self._record("remove", provider_id)

    async def report_load(
        self, provider_id: str, loads: list[link_pb2.ModelLoad], trusted: bool
    ) -> None:
        await asyncio.sleep(self.latency_s if trusted else self.untrust_latency_s)
        self.loads.append(
            (provider_id, [(x.model, x.running, x.waiting, x.max_concurrency) for x in loads])
        )
        self._record("load", provider_id, trusted)

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        self._changed.set()

    def of(self, provider_id: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[1] == provider_id]

    def count(self, *call: Any) -> int:
        return sum(1 for c in self.calls if c == call)

    async def until(self, predicate: Callable[[], bool], within: float = WITHIN) -> None:
        async with asyncio.timeout(within):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


# --- a hand-driven provider -----------------------------------------------------------


@dataclass
class Provider:
    """One provider connection. A background reader queues every frame; after `join`,
    challenges are answered per `challenge_mode` ("right", "wrong", "garbage", "silent")."""

    ws: ClientConnection
    provider_id: str
    keys: KeyPair = field(default_factory=KeyPair.generate)
    challenge_mode: str = "manual"
    challenges: int = 0
    challenged: asyncio.Event = field(default_factory=asyncio.Event)
    frames: asyncio.Queue[link_pb2.Frame] = field(default_factory=asyncio.Queue)
    reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                assert isinstance(data, bytes), "the dispatcher only sends binary frames"
                frame = link_pb2.Frame.FromString(data)
                if frame.WhichOneof("kind") == "challenge" and self.challenge_mode != "manual":
                    self.challenges += 1
                    self.challenged.set()
                    await self._auto_answer(frame.challenge)
                    continue
                self.frames.put_nowait(frame)

    async def _auto_answer(self, challenge: link_pb2.Challenge) -> None:
        if self.challenge_mode == "silent":
            return
        if self.challenge_mode == "right":
            sealed = self.seal_nonce(challenge)
        elif self.challenge_mode == "wrong":
            sealed = self.seal_nonce(challenge, keys=KeyPair.generate())
        else:
            sealed = b"\x00" * 72
        with contextlib.suppress(ConnectionClosed):
            await self.answer(sealed)

    # sending

    async def send(self, frame: link_pb2.Frame) -> None:
        await self.ws.send(frame.SerializeToString())

    async def register(
        self,
        token: str | None = TOKEN,
        public_key: bytes | None = None,
        models: list[common_pb2.ModelInfo] | None = None,
    ) -> None:
        model = common_pb2.ModelInfo(id=MODEL, max_concurrency=4, template_render_ok=True)
        register = link_pb2.Register(
            provider_id=self.provider_id,
            version="0.7.0",
            models=[model] if models is None else models,
            public_key=self.keys.public_bytes if public_key is None else public_key,
            decode_tps=50.0,
            prefill_tps=500.0,
        )
        if token is not None:
            register.enrollment_token = token
        await self.send(link_pb2.Frame(register=register))

    def seal_nonce(self, challenge: link_pb2.Challenge, keys: KeyPair | None = None) -> bytes:
        channel = SealedChannel(keys or self.keys, bytes(challenge.dispatcher_public_key))
        return channel.seal(bytes(challenge.nonce))

    async def answer(self, sealed: bytes) -> None:
        await self.send(
            link_pb2.Frame(challenge_response=link_pb2.ChallengeResponse(sealed_nonce=sealed))
        )

    async def join(self, challenge_mode: str = "right", **register: Any) -> link_pb2.Registered:
        """Register (with `register`'s overrides), answer the connect challenge correctly,
        wait for Registered."""
        await self.register(**register)
        challenge = await self.next("challenge")
        await self.answer(self.seal_nonce(challenge.challenge))
        registered = await self.next("registered")
        self.challenge_mode = challenge_mode
        return registered.registered

    async def heartbeat(self, running: int = 0) -> None:
        load = link_pb2.ModelLoad(model=MODEL, running=running, waiting=0)
        await self.send(link_pb2.Frame(heartbeat=link_pb2.Heartbeat(loads=[load])))

    async def chunk(self, request_id: str, sealed: bytes) -> None:
        await self.send(
            link_pb2.Frame(chunk=link_pb2.Chunk(request_id=request_id, sealed=[sealed]))
        )

    async def complete(self, request_id: str) -> None:
        usage = common_pb2.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
        await self.send(
            link_pb2.Frame(complete=link_pb2.Complete(request_id=request_id, usage=usage))
        )

    # receiving

    async def next(self, kind: str, within: float = WITHIN) -> link_pb2.Frame:
        """The next frame of `kind`; fails on any other kind arriving first."""
        async with asyncio.timeout(within):
            frame = await self.frames.get()
        assert frame.WhichOneof("kind") == kind, frame
        return frame

    def channel_for(self, request: link_pb2.Request) -> SealedChannel:
        """The provider's side of an attempt's box (opens the body, seals the chunks)."""
        return SealedChannel(self.keys, bytes(request.session_public_key))

    async def closed(self, within: float = WITHIN) -> int | None:
        """Wait for the dispatcher to close this connection; its close code."""
        async with asyncio.timeout(within):
            await self.ws.wait_closed()
        return self.ws.close_code

    @property
    def is_open(self) -> bool:
        return self.ws.close_code is None

    async def aclose(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


@dataclass
class Link:
    server: LinkServer
    registry: RecordingRegistry
    port: int
    providers: list[Provider] = field(default_factory=list)

    async def connect(self, provider_id: str = "p1", keys: KeyPair | None = None) -> Provider:
        ws = await connect(f"ws://127.0.0.1:{self.port}", max_size=None, compression=None)
        provider = Provider(ws, provider_id, keys or KeyPair.generate())
        provider.start()
        self.providers.append(provider)
        return provider

    async def joined(
        self,
        provider_id: str = "p1",
        challenge_mode: str = "right",
        keys: KeyPair | None = None,
        **register: Any,
    ) -> Provider:
        provider = await self.connect(provider_id, keys)
        await provider.join(challenge_mode, **register)
        return provider

    def session(self, provider_id: str) -> ProviderSession:
        session = self.server.get(provider_id)
        assert session is not None, f"{provider_id} has no live session"
        return session

    async def attempt(self, provider: Provider, attempt_id: str, body: Any) -> Attempt:
        """Start an attempt on the provider's session; returns it once the provider has
        its Request frame (which the caller reads with `provider.next("request")`)."""
        payload = json.dumps(body).encode()
        return await self.session(provider.provider_id).start_attempt(
            attempt_id, payload, completions=False
        )

    async def still_serves(self, provider: Provider, tag: str) -> None:
        """The provider's session works end to end: a heartbeat reaches the registry and a
        sealed attempt completes with its chunk."""
        before = self.registry.count("load", provider.provider_id, True)
        await provider.heartbeat()
        await self.registry.until(
            lambda: self.registry.count("load", provider.provider_id, True) > before
        )
        attempt = await self.attempt(provider, f"alive-{tag}", {"ping": tag})
        request = (await provider.next("request")).request
        channel = provider.channel_for(request)
        assert json.loads(channel.open(request.sealed_body)) == {"ping": tag}
        await provider.chunk(request.request_id, channel.seal(b'{"pong": true}'))
        await provider.complete(request.request_id)
        events = await collect(attempt)
        assert events[0] == LinkChunk(b'{"pong": true}')
        assert isinstance(events[-1], LinkComplete)


LinkFactory = Callable[..., Awaitable[Link]]


@pytest.fixture
async def start_link(caplog: pytest.LogCaptureFixture) -> AsyncIterator[LinkFactory]:
    """Start a LinkServer with shrunk timers (override any DispatcherConfig field, and
    `clock`, the LinkServer's)."""
    links: list[Link] = []

    async def start(**overrides: Any) -> Link:
        values: dict[str, Any] = dict(
            link_port=0,
            enrollment_tokens=(TOKEN, "second-token"),
            heartbeat_interval_s=0.05,
            offline_after_s=30.0,  # shrunk only by the tests about silence
            challenge_interval_s=300.0,
            challenge_timeout_s=WITHIN,
            max_frame_bytes=64 * 1024,
        )
        clock = overrides.pop("clock", None)
        values.update(overrides)
        registry = RecordingRegistry()
        config = DispatcherConfig(**values)
        server = (
            LinkServer(config, registry) if clock is None else LinkServer(config, registry, clock)
        )
        link = Link(server, registry, await server.start())
        links.append(link)
        return link

    caplog.set_level(logging.WARNING)
    yield start
    for link in links:
        for provider in link.providers:
            await provider.aclose()
        await link.server.stop()
    # F3: nothing a provider sends may crash a handler (websockets logs those at ERROR).
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes]


async def collect(attempt: Attempt, within: float = WITHIN) -> list[LinkEvent]:
    async with asyncio.timeout(within):
        return [event async for event in attempt.events()]


async def next_event(attempt: Attempt, within: float = WITHIN) -> LinkEvent:
    async with asyncio.timeout(within):
        return await attempt.next_event()


# --- F1: enrollment and key possession ------------------------------------------------


@pytest.mark.parametrize("token", ["wrong-token", "", None, TOKEN + " ", TOKEN.upper()])
async def test_f1_bad_or_missing_enrollment_token_is_refused(
    start_link: LinkFactory, token: str | None
) -> None:
    link = await start_link()
    provider = await link.connect()
    await provider.register(token=token)
    assert await provider.closed() == CLOSE_POLICY
    assert provider.frames.empty(), "no challenge for a provider without a valid token"
    assert link.registry.calls == []
    assert link.server.get("p1") is None


async def test_f1_every_configured_token_is_accepted(start_link: LinkFactory) -> None:
    link = await start_link()
    provider = await link.connect()
    await provider.register(token="second-token")
    challenge = await provider.next("challenge")
    await provider.answer(provider.seal_nonce(challenge.challenge))
    await provider.next("registered")
    await link.registry.until(lambda: link.registry.calls == [("upsert", "p1", True)])


async def test_f1_valid_provider_is_upserted_trusted_and_gets_registered(
    start_link: LinkFactory,
) -> None:
    link = await start_link(heartbeat_interval_s=0.25)
    provider = await link.connect()
    await provider.register()
    challenge = (await provider.next("challenge")).challenge
    assert len(challenge.nonce) >= 16 and len(challenge.dispatcher_public_key) == 32
    assert link.registry.calls == [], "not routable before the challenge is answered"
    await provider.answer(provider.seal_nonce(challenge))
    registered = (await provider.next("registered")).registered
    assert registered.provider_id == "p1"
    assert registered.heartbeat_interval_s == 0.25
    assert link.registry.calls == [("upsert", "p1", True)]
    session = link.registry.sessions[0]
    assert session.trusted and session.public_key == provider.keys.public_bytes
    assert [m.id for m in session.models] == [MODEL]
    assert link.server.get("p1") is session


async def test_f1_challenges_are_fresh_per_connection(start_link: LinkFactory) -> None:
    """A recorded answer cannot be replayed: every connection gets a new nonce."""
    link = await start_link()
    first = await link.connect("p1")
    await first.register()
    nonce_1 = (await first.next("challenge")).challenge.nonce
    second = await link.connect("p2")
    await second.register()
    nonce_2 = (await second.next("challenge")).challenge.nonce
    assert nonce_1 != nonce_2


async def test_f1_replayed_answer_to_an_old_challenge_is_refused(start_link: LinkFactory) -> None:
    link = await start_link()
    eavesdropped = await link.connect("p1")
    await eavesdropped.register()
    old = (await eavesdropped.next("challenge")).challenge
    old_answer = eavesdropped.seal_nonce(old)
    # The same provider key on a new connection, replaying the answer to the old nonce.
    replay = await link.connect("p1", keys=eavesdropped.keys)
    await replay.register()
    await replay.next("challenge")
    await replay.answer(old_answer)
    assert await replay.closed() == CLOSE_POLICY
    assert link.registry.calls == []


@pytest.mark.parametrize("answer", ["wrong-key", "garbage", "empty", "plaintext-nonce"])
async def test_f1_provider_that_cannot_answer_the_challenge_is_refused(
    start_link: LinkFactory, answer: str
) -> None:
    link = await start_link()
    provider = await link.connect()
    await provider.register()
    challenge = (await provider.next("challenge")).challenge
    sealed = {
        "wrong-key": provider.seal_nonce(challenge, keys=KeyPair.generate()),
        "garbage": bytes(range(80)),
        "empty": b"",
        "plaintext-nonce": bytes(challenge.nonce),
    }[answer]
    await provider.answer(sealed)
    assert await provider.closed() == CLOSE_POLICY
    assert provider.frames.empty(), "no Registered for a failed challenge"
    assert link.registry.calls == []
    assert link.server.get("p1") is None


async def test_f1_a_different_frame_instead_of_the_answer_is_refused(
    start_link: LinkFactory,
) -> None:
    link = await start_link()
    provider = await link.connect()
    await provider.register()
    await provider.next("challenge")
    await provider.heartbeat()
    assert await provider.closed() == CLOSE_POLICY
    assert link.registry.calls == []


async def test_f1_silence_past_the_challenge_timeout_is_refused(start_link: LinkFactory) -> None:
    link = await start_link(challenge_timeout_s=0.2)
    provider = await link.connect()
    await provider.register()
    await provider.next("challenge")
    assert await provider.closed() == CLOSE_POLICY
    assert link.registry.calls == []


async def test_f1_silence_instead_of_register_is_refused(start_link: LinkFactory) -> None:
    link = await start_link(challenge_timeout_s=0.2)
    provider = await link.connect()
    assert await provider.closed() == CLOSE_POLICY
    assert link.registry.calls == []


@pytest.mark.parametrize(
    "first",
    [
        link_pb2.Frame(heartbeat=link_pb2.Heartbeat()),
        link_pb2.Frame(challenge_response=link_pb2.ChallengeResponse(sealed_nonce=b"x" * 72)),
        link_pb2.Frame(goodbye=link_pb2.Goodbye(reason="hi")),
        link_pb2.Frame(chunk=link_pb2.Chunk(request_id="r", sealed=[b"x"])),
    ],
    ids=["heartbeat", "challenge_response", "goodbye", "chunk"],
)
async def test_f1_the_first_frame_must_be_register(
    start_link: LinkFactory, first: link_pb2.Frame
) -> None:
    link = await start_link()
    provider = await link.connect()
    await provider.send(first)
    assert await provider.closed() == CLOSE_PROTOCOL
    assert provider.frames.empty()
    assert link.registry.calls == []


@pytest.mark.parametrize(
    ("provider_id", "key"), [("", b"k" * 32), ("p1", b""), ("p1", b"k" * 31), ("p1", b"k" * 33)]
)
async def test_f1_register_without_id_or_a_32_byte_key_is_refused(
    start_link: LinkFactory, provider_id: str, key: bytes
) -> None:
    link = await start_link()
    provider = await link.connect(provider_id)
    await provider.register(public_key=key)
    assert await provider.closed() in (CLOSE_PROTOCOL, CLOSE_POLICY)
    assert link.registry.calls == []


async def test_f1_provider_leaving_during_registration_is_not_left_registered(
    start_link: LinkFactory,
) -> None:
    """The provider answers the challenge and is gone before `Registered` can be sent:
    whatever the registry was told must be undone, and no live session may remain."""
    link = await start_link()
    link.registry.upsert_gate = asyncio.Event()
    provider = await link.connect()
    await provider.register()
    challenge = (await provider.next("challenge")).challenge
    await provider.answer(provider.seal_nonce(challenge))
    async with asyncio.timeout(WITHIN):
        await link.registry.upsert_entered.wait()
    await provider.aclose()
    link.registry.upsert_gate.set()
    await link.registry.until(lambda: link.registry.of("p1")[-1:] == [("remove", "p1")])
    assert link.server.get("p1") is None
    # The server still takes providers.
    await link.joined("p2")


async def test_f1_a_passed_periodic_challenge_keeps_the_provider_trusted(
    start_link: LinkFactory,
) -> None:
    link = await start_link(challenge_interval_s=0.05)
    provider = await link.joined("p1", challenge_mode="right")
    async with asyncio.timeout(WITHIN):
        while provider.challenges < 3:
            provider.challenged.clear()
            await provider.challenged.wait()
    await link.still_serves(provider, "after-rechallenges")
    assert provider.is_open
    assert ("load", "p1", False) not in link.registry.calls
    assert ("remove", "p1") not in link.registry.calls


@pytest.mark.parametrize("mode", ["wrong", "garbage", "silent"])
async def test_f1_failing_a_periodic_challenge_makes_the_provider_untrusted(
    start_link: LinkFactory, mode: str
) -> None:
    link = await start_link(challenge_interval_s=0.1, challenge_timeout_s=0.2)
    provider = await link.joined("p1", challenge_mode=mode)
    attempt = await link.attempt(provider, "live-1", {"x": 1})
    await provider.next("request")
    # A heartbeat keeps the session alive, so only the challenge can end it.
    await provider.heartbeat()
    event = await next_event(attempt)
    assert isinstance(event, LinkError) and event.status == 502
    assert await provider.closed() == CLOSE_POLICY
    await link.registry.until(lambda: ("load", "p1", False) in link.registry.calls)
    await link.registry.until(lambda: ("remove", "p1") in link.registry.calls)
    assert link.server.get("p1") is None
    assert provider.challenges >= 1


# --- F2: end-to-end sealing -----------------------------------------------------------


async def test_f2_request_body_is_sealed_to_the_provider_key(start_link: LinkFactory) -> None:
    link = await start_link()
    provider = await link.joined()
    secret = {"messages": [{"role": "user", "content": "the secret word is hedgerow"}]}
    await link.attempt(provider, "sealed-1", secret)
    request = (await provider.next("request")).request
    assert request.request_id == "sealed-1"
    assert b"hedgerow" not in request.SerializeToString(), "body travels sealed"
    assert json.loads(provider.channel_for(request).open(request.sealed_body)) == secret
    third = KeyPair.generate()
    with pytest.raises(SealError):
        SealedChannel(third, bytes(request.session_public_key)).open(request.sealed_body)
    # Nor can the provider's key open it against any other peer key.
    with pytest.raises(SealError):
        SealedChannel(provider.keys, third.public_bytes).open(request.sealed_body)


async def test_f2_every_attempt_gets_a_fresh_ephemeral_key(start_link: LinkFactory) -> None:
    link = await start_link()
    provider = await link.joined()
    await link.attempt(provider, "a", {"n": 1})
    await link.attempt(provider, "b", {"n": 1})
    first = (await provider.next("request")).request
    second = (await provider.next("request")).request
    assert first.session_public_key != second.session_public_key
    assert first.sealed_body != second.sealed_body
    # A chunk sealed for attempt a's box does not open in attempt b's box.
    with pytest.raises(SealError):
        provider.channel_for(second).open(provider.channel_for(first).seal(b"{}"))


async def test_f2_correctly_sealed_chunks_are_opened_in_order(start_link: LinkFactory) -> None:
    link = await start_link()
    provider = await link.joined()
    attempt = await link.attempt(provider, "ok-1", {"n": 1})
    request = (await provider.next("request")).request
    channel = provider.channel_for(request)
    for n in range(3):
        await provider.chunk("ok-1", channel.seal(json.dumps({"n": n}).encode()))
    await provider.complete("ok-1")
    events = await collect(attempt)
    assert events[:3] == [LinkChunk(json.dumps({"n": n}).encode()) for n in range(3)]
    assert isinstance(events[3], LinkComplete) and events[3].usage.total_tokens == 2
    assert ("load", "p1", False) not in link.registry.calls


@pytest.mark.parametrize(
    "how", ["third-key", "to-wrong-peer", "other-attempt-box", "plaintext", "empty", "truncated"]
)
async def test_f2_wrongly_sealed_or_plaintext_chunk_fails_the_attempt_and_untrusts(
    start_link: LinkFactory, how: str
) -> None:
    link = await start_link()
    provider = await link.joined()
    other = await link.joined("p2")
    attempt = await link.attempt(provider, "bad-1", {"n": 1})
    bystander = await link.attempt(provider, "bad-2", {"n": 2})
    request = (await provider.next("request")).request
    second = (await provider.next("request")).request
    right = provider.channel_for(request)
    payload = b'{"choices": [{"delta": {"content": "hi"}}]}'
    await provider.chunk("bad-1", right.seal(payload))  # one good chunk first
    sealed = {
        "third-key": SealedChannel(KeyPair.generate(), bytes(request.session_public_key)).seal(
            payload
        ),
        "to-wrong-peer": SealedChannel(provider.keys, KeyPair.generate().public_bytes).seal(
            payload
        ),
        "other-attempt-box": provider.channel_for(second).seal(payload),
        "plaintext": payload,
        "empty": b"",
        "truncated": right.seal(payload)[:-1],
    }[how]
    await provider.chunk("bad-1", sealed)
    events = await collect(attempt)
    assert events == [LinkChunk(payload), events[-1]]
    assert isinstance(events[-1], LinkError) and events[-1].status == 502
    # Every live attempt of an untrusted provider fails the same way.
    failed = await next_event(bystander)
    assert isinstance(failed, LinkError) and failed.status == 502
    assert await provider.closed() == CLOSE_POLICY
    await link.registry.until(lambda: ("load", "p1", False) in link.registry.calls)
    await link.registry.until(lambda: ("remove", "p1") in link.registry.calls)
    assert link.server.get("p1") is None
    # The other provider is untouched.
    assert ("load", "p2", False) not in link.registry.calls
    await link.still_serves(other, how)


async def test_f2_untrusted_provider_must_pass_the_door_again(start_link: LinkFactory) -> None:
    link = await start_link()
    provider = await link.joined()
    await link.attempt(provider, "bad-1", {"n": 1})
    await provider.next("request")
    await provider.chunk("bad-1", b"plaintext")
    assert await provider.closed() == CLOSE_POLICY
    await link.registry.until(lambda: ("remove", "p1") in link.registry.calls)
    again = await link.connect("p1", keys=provider.keys)
    await again.join()
    await link.registry.until(lambda: link.registry.of("p1")[-1] == ("upsert", "p1", True))
    await link.still_serves(again, "rejoined")


# --- F3: frames and sessions ----------------------------------------------------------


async def test_f3_oversize_frame_closes_only_that_session(start_link: LinkFactory) -> None:
    link = await start_link(max_frame_bytes=64 * 1024)
    big = await link.joined("big")
    other = await link.joined("other")
    attempt = await link.attempt(big, "big-1", {"n": 1})
    request = (await big.next("request")).request
    # A frame just under the limit is fine...
    channel = big.channel_for(request)
    fits = channel.seal(b"x" * (60 * 1024))
    await big.chunk("big-1", fits)
    first = await next_event(attempt)
    assert isinstance(first, LinkChunk) and len(first.payload) == 60 * 1024
    # ...one over it closes the session.
    await big.chunk("big-1", channel.seal(b"x" * (64 * 1024 + 1)))
    assert await big.closed() == CLOSE_TOO_BIG
    assert isinstance(await next_event(attempt), LinkDisconnected)
    await link.registry.until(lambda: ("remove", "big") in link.registry.calls)
    assert link.server.get("big") is None
    await link.still_serves(other, "after-oversize")
    assert ("remove", "other") not in link.registry.calls
    await link.joined("newcomer")


async def test_f7_register_over_the_pre_auth_limit_is_refused(start_link: LinkFactory) -> None:
    """The pre-auth frame limit, not the (larger) frame limit, holds the Register."""
    link = await start_link(max_frame_bytes=64 * 1024, limits=LinkLimits(max_register_bytes=4096))
    provider = await link.connect()
    model = common_pb2.ModelInfo(id="m" * 5000)
    register = link_pb2.Register(
        provider_id="p1", public_key=provider.keys.public_bytes, models=[model]
    )
    register.enrollment_token = TOKEN
    await provider.send(link_pb2.Frame(register=register))
    assert await provider.closed() == CLOSE_TOO_BIG
    assert link.registry.calls == []


GARBAGE: dict[str, bytes | str] = {
    "garbage-bytes": b"\xff\xfe\xfd\xfc\x00\x01garbage",
    "truncated-frame": link_pb2.Frame(
        heartbeat=link_pb2.Heartbeat(loads=[link_pb2.ModelLoad(model=MODEL)])
    ).SerializeToString()[:-3],
    "unknown-field-only": b"\xf8\x3f\x01",  # field 1023 = 1: parses to an empty Frame
    "bad-utf8-string": b"\x0a\x03\x0a\x01\xff",  # register.provider_id = b"\xff"
    "text-frame": "hello dispatcher",
    "text-frame-of-a-valid-frame": "*\x00",  # a Heartbeat, had it come as binary
    "empty-frame": link_pb2.Frame().SerializeToString(),
}


@pytest.mark.parametrize("what", list(GARBAGE))
async def test_f3_malformed_frame_before_register_closes_only_that_connection(
    start_link: LinkFactory, what: str
) -> None:
    link = await start_link()
    other = await link.joined("other")
    provider = await link.connect("p1")
    await provider.ws.send(GARBAGE[what])
    assert await provider.closed() == CLOSE_PROTOCOL
    assert link.registry.of("p1") == []
    await link.still_serves(other, what)


@pytest.mark.parametrize("what", list(GARBAGE))
async def test_f3_malformed_frame_closes_only_that_session(
    start_link: LinkFactory, what: str
) -> None:
    link = await start_link()
    bad = await link.joined("bad")
    other = await link.joined("other")
    attempt = await link.attempt(bad, "bad-1", {"n": 1})
    await bad.next("request")
    await bad.ws.send(GARBAGE[what])
    assert await bad.closed() == CLOSE_PROTOCOL
    assert isinstance(await next_event(attempt), LinkDisconnected)
    await link.registry.until(lambda: ("remove", "bad") in link.registry.calls)
    assert link.server.get("bad") is None
    # The other provider, connected all along, keeps serving; newcomers are welcome.
    await link.still_serves(other, what)
    assert ("remove", "other") not in link.registry.calls
    await link.still_serves(await link.joined("newcomer"), what)


@pytest.mark.parametrize(
    "frame",
    [
        link_pb2.Frame(register=link_pb2.Register(provider_id="bad")),
        link_pb2.Frame(registered=link_pb2.Registered(provider_id="bad")),
        link_pb2.Frame(challenge=link_pb2.Challenge(nonce=b"n")),
        link_pb2.Frame(request=link_pb2.Request(request_id="r")),
        link_pb2.Frame(cancel=link_pb2.Cancel(request_id="r")),
    ],
    ids=["register-again", "registered", "challenge", "request", "cancel"],
)
async def test_f3_dispatcher_only_frames_from_a_provider_close_its_session(
    start_link: LinkFactory, frame: link_pb2.Frame
) -> None:
    link = await start_link()
    bad = await link.joined("bad")
    other = await link.joined("other")
    await bad.send(frame)
    assert await bad.closed() == CLOSE_PROTOCOL
    await link.registry.until(lambda: ("remove", "bad") in link.registry.calls)
    assert link.registry.count("upsert", "bad", True) == 1
    await link.still_serves(other, frame.WhichOneof("kind") or "")


async def test_f3_many_bad_connections_at_once_never_hurt_the_server(
    start_link: LinkFactory,
) -> None:
    link = await start_link()
    other = await link.joined("other")
    bad = [await link.connect(f"bad-{n}") for n in range(8)]
    await asyncio.gather(
        *(p.ws.send(list(GARBAGE.values())[n % len(GARBAGE)]) for n, p in enumerate(bad))
    )
    codes = await asyncio.gather(*(p.closed() for p in bad))
    assert set(codes) == {CLOSE_PROTOCOL}
    await link.still_serves(other, "after-storm")
    await link.joined("newcomer")


async def test_f3_silence_past_offline_after_closes_and_removes(start_link: LinkFactory) -> None:
    link = await start_link(heartbeat_interval_s=0.05, offline_after_s=1.0)
    silent = await link.joined("silent")
    chatty = await link.joined("chatty")
    attempt = await link.attempt(silent, "quiet-1", {"n": 1})
    await silent.next("request")

    async def beat() -> None:
        while True:
            await chatty.heartbeat()
            await asyncio.sleep(0.05)

    beating = asyncio.get_running_loop().create_task(beat())
    try:
        assert await silent.closed() == CLOSE_POLICY
        assert isinstance(await next_event(attempt), LinkDisconnected)
        await link.registry.until(lambda: ("remove", "silent") in link.registry.calls)
        assert link.server.get("silent") is None
        assert ("load", "silent", False) not in link.registry.calls, "silence is not distrust"
        assert chatty.is_open and link.server.get("chatty") is not None
        assert ("remove", "chatty") not in link.registry.calls
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def test_f5_re_registration_with_the_same_key_replaces_the_old_session(
    start_link: LinkFactory,
) -> None:
    link = await start_link()
    old = await link.joined("p1")
    old_session = link.session("p1")
    attempt = await link.attempt(old, "old-1", {"n": 1})
    await old.next("request")
    new = await link.connect("p1", keys=old.keys)  # a restart of the same provider
    await new.join()
    assert isinstance(await next_event(attempt), LinkDisconnected)
    assert await old.closed() == CLOSE_POLICY
    session = link.session("p1")
    assert session is not old_session and session.ws is not old_session.ws
    assert session.public_key == new.keys.public_bytes
    assert old_session.closed and old_session.live_attempts == 0
    # The provider stays registered throughout: the old session's end removes nothing.
    await link.registry.until(lambda: link.registry.count("upsert", "p1", True) == 2)
    await link.still_serves(new, "replaced")
    assert ("remove", "p1") not in link.registry.calls
    assert link.registry.of("p1")[-1][0] in ("upsert", "load")
    assert link.server.get("p1") is session


async def test_f5_re_registration_is_not_held_up_by_a_dead_old_connection(
    start_link: LinkFactory,
) -> None:
    """The usual reason to re-register: the provider restarted and its old TCP connection
    is dead but not yet noticed. Its close handshake never completes (websockets waits
    10 s for it), which must not delay the new session."""
    link = await start_link()
    old = await link.joined("p1")
    attempt = await link.attempt(old, "old-1", {"n": 1})
    await old.next("request")
    assert isinstance(old.ws.transport, asyncio.Transport)
    old.ws.transport.pause_reading()  # the old peer answers nothing any more
    new = await link.connect("p1", keys=old.keys)
    await new.join()  # within WITHIN (5 s), well under the 10 s close timeout
    assert isinstance(await next_event(attempt), LinkDisconnected)
    await link.still_serves(new, "replaced-dead")
    assert link.registry.count("upsert", "p1", True) == 2
    assert ("remove", "p1") not in link.registry.calls
    old.ws.transport.abort()  # TCP finally notices; the server's teardown need not wait


async def test_f3_goodbye_closes_cleanly(start_link: LinkFactory) -> None:
    link = await start_link()
    provider = await link.joined()
    other = await link.joined("other")
    attempt = await link.attempt(provider, "bye-1", {"n": 1})
    await provider.next("request")
    await provider.send(link_pb2.Frame(goodbye=link_pb2.Goodbye(reason="shutting down")))
    assert await provider.closed() == CLOSE_OK
    assert isinstance(await next_event(attempt), LinkDisconnected)
    await link.registry.until(lambda: ("remove", "p1") in link.registry.calls)
    assert ("load", "p1", False) not in link.registry.calls, "leaving is not distrust"
    assert link.server.get("p1") is None
    await link.still_serves(other, "after-goodbye")


async def test_f3_late_frames_for_a_cancelled_attempt_are_ignored(
    start_link: LinkFactory,
) -> None:
    link = await start_link()
    provider = await link.joined()
    attempt = await link.attempt(provider, "gone-1", {"n": 1})
    request = (await provider.next("request")).request
    channel = provider.channel_for(request)
    await attempt.cancel()
    assert (await provider.next("cancel")).cancel.request_id == "gone-1"
    await attempt.cancel()  # twice is harmless and sends nothing more
    # Everything the provider had in flight for it arrives late, even a badly sealed chunk.
    await provider.send(link_pb2.Frame(accepted=link_pb2.Accepted(request_id="gone-1")))
    await provider.chunk("gone-1", channel.seal(b'{"late": true}'))
    await provider.chunk("gone-1", b"late plaintext")
    await provider.send(
        link_pb2.Frame(error=link_pb2.Error(request_id="gone-1", status_code=500, message="x"))
    )
    await provider.complete("gone-1")
    await provider.chunk("never-sent", b"unknown attempt")
    await link.still_serves(provider, "after-late-frames")
    assert attempt.ready_events() == []
    assert provider.is_open
    assert ("load", "p1", False) not in link.registry.calls
    assert provider.frames.empty(), "no second Cancel"


async def test_f3_late_frames_for_a_finished_attempt_are_ignored(
    start_link: LinkFactory,
) -> None:
    link = await start_link()
    provider = await link.joined()
    attempt = await link.attempt(provider, "done-1", {"n": 1})
    request = (await provider.next("request")).request
    channel = provider.channel_for(request)
    await provider.complete("done-1")
    assert isinstance((await collect(attempt))[-1], LinkComplete)
    await provider.chunk("done-1", channel.seal(b"{}"))
    await provider.chunk("done-1", b"plaintext after the end")
    await link.still_serves(provider, "after-finished")
    assert attempt.ready_events() == []
    assert ("load", "p1", False) not in link.registry.calls


async def test_f3_server_stop_disconnects_live_attempts(start_link: LinkFactory) -> None:
    link = await start_link()
    provider = await link.joined()
    attempt = await link.attempt(provider, "stop-1", {"n": 1})
    await provider.next("request")
    await link.server.stop()
    assert isinstance(await next_event(attempt), LinkDisconnected)
    assert await provider.closed() is not None
    await link.registry.until(lambda: ("remove", "p1") in link.registry.calls)
