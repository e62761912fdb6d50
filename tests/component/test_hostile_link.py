"""Hostile providers against the real `LinkServer` on 127.0.0.1 port 0 (rules F4-F8).

Each test is an attack from issue 19 by a scripted provider speaking the link protocol by
hand (the harness of `test_link_security`), and checks it is held: the attacker is refused
or clamped, and everyone else's sessions and attempts go on untouched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.sealing import KeyPair
from dispatcher_svc.config import LinkLimits
from dispatcher_svc.link import LinkChunk, LinkComplete, LinkError
from tests.component import test_link_security
from tests.component.test_link_security import (
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    MODEL,
    TOKEN,
    LinkFactory,
    collect,
    next_event,
)
from tests.fakes.clock import FakeClock

start_link = test_link_security.start_link  # the harness's fixture, used here as is

CLOSE_TRY_AGAIN = 1013


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `predicate` (the door's pending count has no event to wait on)."""
    async with asyncio.timeout(within):
        for _ in itertools.count():
            if predicate():
                return
            await asyncio.sleep(0.01)


def models(*ids: str) -> list[common_pb2.ModelInfo]:
    return [common_pb2.ModelInfo(id=i, max_concurrency=2) for i in ids]


# --- F5: identity bound to key ------------------------------------------------------------


async def test_f5_hijack_of_a_live_id_with_another_key_is_refused_and_the_victim_keeps_serving(
    start_link: LinkFactory,
) -> None:
    """The issue's hijack: registering with a live provider's id and the attacker's own key
    replaced the victim's session and received its requests."""
    link = await start_link()
    victim = await link.joined("p1")
    in_flight = await link.attempt(victim, "victim-1", {"secret": "for p1 only"})
    request = (await victim.next("request")).request
    attacker = await link.connect("p1")  # a fresh key of its own
    await attacker.register()
    assert await attacker.closed() == CLOSE_POLICY
    assert attacker.ws.close_reason == "provider id bound to another key"
    assert attacker.frames.empty(), "refused before any challenge"
    # The victim's session, its in-flight attempt and its registration are untouched.
    channel = victim.channel_for(request)
    await victim.chunk("victim-1", channel.seal(b'{"n": 1}'))
    await victim.complete("victim-1")
    events = await collect(in_flight)
    assert events[0] == LinkChunk(b'{"n": 1}') and isinstance(events[-1], LinkComplete)
    assert link.session("p1").public_key == victim.keys.public_bytes
    assert link.registry.count("upsert", "p1", True) == 1
    assert ("remove", "p1") not in link.registry.calls
    await link.still_serves(victim, "after-hijack")


async def test_f5_two_registrations_racing_for_one_id_the_second_key_loses(
    start_link: LinkFactory,
) -> None:
    """Both pass the early check (the id is free); the door checks again at the commit."""
    link = await start_link()
    first = await link.connect("p1")
    second = await link.connect("p1")
    await first.register()
    await second.register()
    first_challenge = (await first.next("challenge")).challenge
    second_challenge = (await second.next("challenge")).challenge
    await first.answer(first.seal_nonce(first_challenge))
    await first.next("registered")
    await second.answer(second.seal_nonce(second_challenge))
    assert await second.closed() == CLOSE_POLICY
    assert second.ws.close_reason == "provider id bound to another key"
    assert link.session("p1").public_key == first.keys.public_bytes
    await link.still_serves(first, "won-the-race")


async def test_f5_an_offline_id_stays_bound_for_the_ttl_then_is_free(
    start_link: LinkFactory,
) -> None:
    clock = FakeClock()
    link = await start_link(clock=clock, limits=LinkLimits(id_binding_ttl_s=3600.0))
    victim = await link.joined("p1")
    await victim.send(link_pb2.Frame(goodbye=link_pb2.Goodbye(reason="restart")))
    await link.registry.until(lambda: ("remove", "p1") in link.registry.calls)
    clock.advance(3599.0)
    squatter = await link.connect("p1")
    await squatter.register()
    assert await squatter.closed() == CLOSE_POLICY
    # The owner comes back with its key within the ttl: welcome.
    back = await link.joined("p1", keys=victim.keys)
    await link.still_serves(back, "owner-back")
    await back.send(link_pb2.Frame(goodbye=link_pb2.Goodbye(reason="leaving for good")))
    await link.registry.until(lambda: link.registry.count("remove", "p1") == 2)
    clock.advance(3600.5)
    newcomer = await link.joined("p1")  # past the ttl: a new key may take the id
    assert link.session("p1").public_key == newcomer.keys.public_bytes


# --- F6: per-token caps -------------------------------------------------------------------


async def test_f6_a_token_over_its_link_cap_is_refused_and_others_are_not(
    start_link: LinkFactory,
) -> None:
    link = await start_link(limits=LinkLimits(max_links_per_token=3))
    held = [await link.joined(f"p{n}") for n in range(3)]
    extra = await link.connect("p3")
    await extra.register()
    assert await extra.closed() == CLOSE_POLICY
    assert "3 links" in (extra.ws.close_reason or "")
    # Another token has its own cap.
    other = await link.connect("q0")
    await other.register(token="second-token")
    await other.answer(other.seal_nonce((await other.next("challenge")).challenge))
    await other.next("registered")
    # A reconnect at the cap replaces its own session rather than count twice.
    again = await link.joined("p0", keys=held[0].keys)
    await link.still_serves(again, "reconnect-at-cap")
    # One leaves: there is room again.
    await held[1].send(link_pb2.Frame(goodbye=link_pb2.Goodbye(reason="bye")))
    await link.registry.until(lambda: ("remove", "p1") in link.registry.calls)
    await link.still_serves(await link.joined("p3"), "room-again")


async def test_f6_300_silent_providers_from_one_token_cannot_exist(
    start_link: LinkFactory,
) -> None:
    """The issue's flood, bounded: with the default cap, one token holds 64 links and no
    more (70 tried, one after the other; the 6 beyond are refused)."""
    cap = LinkLimits().max_links_per_token
    link = await start_link()
    for n in range(cap):
        await link.joined(f"silent-{n}")
    refused = []
    for n in range(cap, cap + 6):
        provider = await link.connect(f"silent-{n}")
        await provider.register()
        refused.append(await provider.closed())
    assert refused == [CLOSE_POLICY] * 6
    assert len(link.server.sessions) == cap
    assert link.registry.count("upsert", f"silent-{cap}", True) == 0


async def test_f6_a_token_over_its_model_cap_is_refused(start_link: LinkFactory) -> None:
    link = await start_link(limits=LinkLimits(max_models_per_token=3))
    first = await link.joined("p1", models=models("a", "b"))
    second = await link.connect("p2")
    await second.register(models=models("c", "d"))
    assert await second.closed() == CLOSE_POLICY
    assert "3 models" in (second.ws.close_reason or "")
    await link.joined("p3", models=models("c"))
    # A ModelsUpdate that would take the token over its cap ends that session.
    await first.send(
        link_pb2.Frame(models_update=link_pb2.ModelsUpdate(models=models("a", "b", "x")))
    )
    assert await first.closed() == CLOSE_POLICY
    await link.registry.until(lambda: ("remove", "p1") in link.registry.calls)
    assert link.registry.count("upsert", "p1", True) == 1


# --- F7: before the challenge -------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def peak_rss(every_s: float = 0.005) -> Iterator[list[int]]:
    """Samples this process's RSS from a thread (the event loop may be busy) while the
    block runs; yields [baseline, peak]."""
    found = [_rss_bytes(), _rss_bytes()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            found[1] = max(found[1], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()
        found[1] = max(found[1], _rss_bytes())


async def _raw_frame_attack(port: int, payload: memoryview) -> int | None:
    """One attacker on a raw socket (so the test process holds no per-connection copy of
    what it sends): WebSocket upgrade, then one binary frame carrying `payload`, written
    in pieces while a reader waits for the server's close frame. Its close code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")

    async def close_code() -> int | None:
        head = await reader.readexactly(2)  # the server sends nothing but its close frame
        assert head[0] == 0x88, head
        body = await reader.readexactly(head[1] & 0x7F)
        return int.from_bytes(body[:2], "big") if len(body) >= 2 else None

    closing = asyncio.ensure_future(close_code())
    # FIN + binary; 64-bit length; mask bit with an all-zero key (the payload goes as is).
    writer.write(bytes([0x82, 0xFF]) + len(payload).to_bytes(8, "big") + b"\0\0\0\0")
    try:
        for start in range(0, len(payload), 256 * 1024):
            if closing.done():
                break
            writer.write(payload[start : start + 256 * 1024])
            await writer.drain()
    except ConnectionError:
        pass  # the server is done with us
    try:
        async with asyncio.timeout(10):
            return await closing
    finally:
        writer.transport.abort()


async def test_f7_oversized_pre_auth_registers_are_refused_without_memory_blow_up(
    start_link: LinkFactory,
) -> None:
    """The issue's attack, bounded (2 shared cores): 24 connections at once each send a
    Register of 8 MiB (under the 10 MiB frame limit). Refused at the frame header, so the
    dispatcher buffers none of it: its process grows by far less than one such frame per
    connection (with the old limit it held them all: 59 -> 769 MB for 40)."""
    count, size = 24, 8 * 1024 * 1024
    link = await start_link(
        max_frame_bytes=10 * 1024 * 1024,
        limits=LinkLimits(max_pending_handshakes=count, max_pending_handshakes_per_addr=count),
    )
    register = link_pb2.Register(
        provider_id="p1",
        public_key=KeyPair.generate().public_bytes,
        enrollment_token=TOKEN,
        models=[common_pb2.ModelInfo(id="m" * size)],
    )
    payload = memoryview(link_pb2.Frame(register=register).SerializeToString())
    assert len(payload) > size
    with peak_rss() as rss:
        codes = await asyncio.gather(*(_raw_frame_attack(link.port, payload) for _ in range(count)))
    assert codes == [CLOSE_TOO_BIG] * count
    growth = rss[1] - rss[0]
    assert growth < 48 * 1024 * 1024, f"dispatcher grew {growth / 2**20:.0f} MiB"
    assert link.registry.calls == []
    await eventually(lambda: link.server.pending_handshakes == 0)
    await link.still_serves(await link.joined("honest"), "after-big-registers")


@pytest.mark.parametrize("per_addr", [True, False])
async def test_f7_connections_in_the_handshake_are_capped(
    start_link: LinkFactory, per_addr: bool
) -> None:
    """Silent connections hold the door only up to the cap; the next is told to come back
    later at once (1013), and the door opens again as they go."""
    limits = (
        LinkLimits(max_pending_handshakes=10, max_pending_handshakes_per_addr=3)
        if per_addr
        else LinkLimits(max_pending_handshakes=3, max_pending_handshakes_per_addr=10)
    )
    link = await start_link(limits=limits)
    honest = await link.joined("honest")  # registered: no longer in the handshake
    silent = [await link.connect(f"s{n}") for n in range(3)]
    await eventually(lambda: link.server.pending_handshakes == 3)
    turned_away = await link.connect("late")
    started = time.monotonic()
    assert await turned_away.closed() == CLOSE_TRY_AGAIN
    assert time.monotonic() - started < 2.0, "refused at once, not after a timeout"
    await link.still_serves(honest, "door-full")
    for provider in silent:
        await provider.aclose()
    await eventually(lambda: link.server.pending_handshakes == 0)
    await link.still_serves(await link.joined("newcomer"), "door-open")


async def test_f7_the_whole_handshake_has_a_deadline(start_link: LinkFactory) -> None:
    """A provider that never answers the challenge holds its door slot only for the
    handshake deadline, not the (longer) challenge timeout."""
    link = await start_link(challenge_timeout_s=30.0, limits=LinkLimits(handshake_timeout_s=0.3))
    provider = await link.connect("slow")
    started = time.monotonic()
    await provider.register()
    await provider.next("challenge")
    assert await provider.closed() == CLOSE_POLICY
    assert time.monotonic() - started < 5.0
    assert link.registry.calls == []


async def test_f7_the_frame_limit_rises_once_the_challenge_is_passed(
    start_link: LinkFactory,
) -> None:
    link = await start_link(max_frame_bytes=64 * 1024, limits=LinkLimits(max_register_bytes=4096))
    provider = await link.joined("p1")
    await provider.heartbeat()  # the first frame after the answer keeps the old limit
    attempt = await link.attempt(provider, "big-1", {"n": 1})
    request = (await provider.next("request")).request
    channel = provider.channel_for(request)
    await provider.chunk("big-1", channel.seal(b"x" * 30_000))  # well over 4096
    await provider.complete("big-1")
    events = await collect(attempt)
    assert events[0] == LinkChunk(b"x" * 30_000) and isinstance(events[-1], LinkComplete)


# --- F4: what the registry is told --------------------------------------------------------


async def test_f4_negative_load_is_clamped_before_the_registry_sees_it(
    start_link: LinkFactory,
) -> None:
    """The issue's capture: waiting=-1000 won one provider 120 of 120 requests."""
    link = await start_link()
    liar = await link.joined("liar")
    loads = [
        link_pb2.ModelLoad(model=MODEL, running=-3, waiting=-1000, max_concurrency=10**6),
        link_pb2.ModelLoad(model="never-registered", running=0, waiting=0),
        link_pb2.ModelLoad(model=MODEL, running=0, waiting=-(2**31)),
    ]
    await liar.send(link_pb2.Frame(heartbeat=link_pb2.Heartbeat(loads=loads)))
    await link.registry.until(lambda: bool(link.registry.loads))
    cap = LinkLimits().max_model_concurrency
    assert link.registry.loads == [("liar", [(MODEL, 0, 0, cap)])]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("provider_id", "p1\r\nX-Injected: 1"),
        ("provider_id", "p" * 129),
        ("version", "0.7.0\r\n"),
        ("hardware", "gpu\x1b[2J"),
    ],
)
async def test_f4_register_with_hostile_text_is_refused(
    start_link: LinkFactory, field: str, value: str
) -> None:
    link = await start_link()
    provider = await link.connect("p1")
    register = link_pb2.Register(
        provider_id="p1",
        version="0.7.0",
        public_key=provider.keys.public_bytes,
        enrollment_token=TOKEN,
        models=models(MODEL),
    )
    setattr(register, field, value)
    await provider.send(link_pb2.Frame(register=register))
    assert await provider.closed() == CLOSE_PROTOCOL
    assert field in (provider.ws.close_reason or "")
    assert link.registry.calls == []


async def test_f4_a_heartbeat_over_the_load_cap_or_a_bad_models_update_ends_the_session(
    start_link: LinkFactory,
) -> None:
    link = await start_link(limits=LinkLimits(max_models_per_provider=4))
    other = await link.joined("other")
    flooder = await link.joined("flooder")
    loads = [link_pb2.ModelLoad(model=MODEL)] * 5
    await flooder.send(link_pb2.Frame(heartbeat=link_pb2.Heartbeat(loads=loads)))
    assert await flooder.closed() == CLOSE_PROTOCOL
    poisoner = await link.joined("poisoner")
    bad = models(MODEL, "evil\r\nid")
    await poisoner.send(link_pb2.Frame(models_update=link_pb2.ModelsUpdate(models=bad)))
    assert await poisoner.closed() == CLOSE_PROTOCOL
    await link.registry.until(lambda: ("remove", "poisoner") in link.registry.calls)
    assert link.registry.count("upsert", "poisoner", True) == 1
    await link.still_serves(other, "after-poison")


async def test_f4_models_update_is_validated_and_a_repeat_costs_nothing(
    start_link: LinkFactory,
) -> None:
    link = await start_link()
    provider = await link.joined("p1", models=models(MODEL))
    update = [common_pb2.ModelInfo(id=MODEL, max_concurrency=-9), *models("second")]
    for _ in range(3):
        await provider.send(link_pb2.Frame(models_update=link_pb2.ModelsUpdate(models=update)))
    await link.still_serves(provider, "after-updates")
    assert link.registry.count("upsert", "p1", True) == 2, "one upsert for the change, no repeats"
    session = link.registry.sessions[-1]
    assert [(m.id, m.max_concurrency) for m in session.models] == [(MODEL, 1), ("second", 2)]


async def test_f4_a_heartbeat_flood_reaches_the_registry_at_a_bounded_rate(
    start_link: LinkFactory,
) -> None:
    link = await start_link(heartbeat_interval_s=10.0)  # budget: 8 at once, then 0.4/s
    flooder = await link.joined("flooder")
    for _ in range(300):
        await flooder.heartbeat()
    # The session is alive and serving; its reports were held to the budget.
    attempt = await link.attempt(flooder, "after-flood", {"n": 1})
    request = (await flooder.next("request")).request
    await flooder.complete(request.request_id)
    assert isinstance((await collect(attempt))[-1], LinkComplete)
    assert 8 <= link.registry.count("load", "flooder", True) <= 10


async def test_f4_provider_error_and_usage_figures_are_clamped(start_link: LinkFactory) -> None:
    link = await start_link()
    provider = await link.joined("p1")
    failing = await link.attempt(provider, "e-1", {"n": 1})
    await provider.next("request")
    error = link_pb2.Error(
        request_id="e-1", status_code=200, message="ok\r\nX-Evil: 1" + "z" * 9000
    )
    await provider.send(link_pb2.Frame(error=error))
    (event,) = await collect(failing)
    assert isinstance(event, LinkError) and event.status == 502
    assert event.message.startswith("ok  X-Evil: 1") and len(event.message) == 1024
    finishing = await link.attempt(provider, "u-1", {"n": 1})
    await provider.next("request")
    usage = common_pb2.Usage(prompt_tokens=-4, completion_tokens=2**40, total_tokens=-1)
    await provider.send(link_pb2.Frame(complete=link_pb2.Complete(request_id="u-1", usage=usage)))
    (done,) = await collect(finishing)
    assert isinstance(done, LinkComplete)
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (0, 2**31 - 1)
    assert done.usage.total_tokens == 2**31 - 1


# --- F8: chunk cap --------------------------------------------------------------------------


async def test_f8_an_oversized_chunk_fails_only_its_attempt(start_link: LinkFactory) -> None:
    link = await start_link(limits=LinkLimits(max_chunk_bytes=4096))
    big = await link.joined("big")
    other = await link.joined("other")
    doomed = await link.attempt(big, "doomed", {"n": 1})
    sibling = await link.attempt(big, "sibling", {"n": 2})
    elsewhere = await link.attempt(other, "elsewhere", {"n": 3})
    doomed_box = big.channel_for((await big.next("request")).request)
    sibling_box = big.channel_for((await big.next("request")).request)
    other_box = other.channel_for((await other.next("request")).request)
    # At the cap is fine, one byte over fails the attempt.
    await big.chunk("doomed", doomed_box.seal(b"x" * 4096))
    assert await next_event(doomed) == LinkChunk(b"x" * 4096)
    await big.chunk("doomed", doomed_box.seal(b"x" * 4097))
    failed = await next_event(doomed)
    assert isinstance(failed, LinkError) and failed.status == 502 and "4096" in failed.message
    assert (await big.next("cancel")).cancel.request_id == "doomed", "the provider is told"
    # The same provider's other attempt, and the other provider, go on.
    await big.chunk("sibling", sibling_box.seal(b'{"s": 1}'))
    await big.complete("sibling")
    assert isinstance((await collect(sibling))[-1], LinkComplete)
    await other.chunk("elsewhere", other_box.seal(b'{"e": 1}'))
    await other.complete("elsewhere")
    assert isinstance((await collect(elsewhere))[-1], LinkComplete)
    assert big.is_open and ("load", "big", False) not in link.registry.calls
    await link.still_serves(big, "after-oversize-chunk")


async def test_f8_chunks_that_fit_alone_but_not_together_fail_the_attempt(
    start_link: LinkFactory,
) -> None:
    link = await start_link(limits=LinkLimits(max_chunk_bytes=4096))
    provider = await link.joined("p1")
    attempt = await link.attempt(provider, "batch", {"n": 1})
    box = provider.channel_for((await provider.next("request")).request)
    sealed = [box.seal(b"y" * 3000) for _ in range(2)]
    await provider.send(link_pb2.Frame(chunk=link_pb2.Chunk(request_id="batch", sealed=sealed)))
    event = await next_event(attempt)
    assert isinstance(event, LinkError) and event.status == 502
    assert attempt.ready_events() == [], "none of the batch's chunks was delivered"
    assert (await provider.next("cancel")).cancel.request_id == "batch"
    await link.still_serves(provider, "after-batch")
