"""The registry through a real grpc.aio server on port 0 and a real client stub (A6, A7, C1-C7).

Each test starts its own `registry_svc` server around a `registry.Registry` with small
settings and a hand-moved clock (so liveness and reconnect windows are exact, never timed),
and talks to it only through `RegistryStub`: the provider table's unary calls, and Reserve
and Release over one `Slots` stream, as the dispatcher does. A request's first Reserve is
its admission: the client gets a reservation, a wait in the queue, or a refusal (status,
code and retry-after in `SlotAnswer.refused`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2, registry_pb2_grpc
from contract.errors import Failure
from registry_svc import server as registry_server
from registry_svc.config import RegistryConfig
from registry_svc.model import RegistrySettings
from registry_svc.registry import Registry
from tests.fakes.clock import FakeClock

MODEL = "m"
PLAIN = common_pb2.Traits()
TOOLS = common_pb2.Traits(has_tools=True)
VISION = common_pb2.Traits(requires_vision=True)
# A call that must not wait in the queue gets far longer than it needs; a queue wait would
# end in a timeout (or a 429 timeout) instead of the answer the test expects.
CALL_TIMEOUT_S = 10.0


class SlotStream:
    """One `Slots` stream, as a dispatcher holds it: each call carries an id, and answers
    come back by that id in whatever order the registry gives them."""

    def __init__(self, stub: registry_pb2_grpc.RegistryStub) -> None:
        self._call = stub.Slots()
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[registry_pb2.SlotAnswer]] = {}
        self._writing = asyncio.Lock()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while (answer := await self._call.read()) is not grpc.aio.EOF:
            future = self._answers.get(answer.call_id)
            if future is not None and not future.done():
                future.set_result(answer)

    async def _write(self, call: registry_pb2.SlotCall) -> None:
        async with self._writing:
            await self._call.write(call)

    async def call(self, call: registry_pb2.SlotCall) -> registry_pb2.SlotAnswer:
        call.call_id = next(self._ids)
        answer: asyncio.Future[registry_pb2.SlotAnswer] = asyncio.get_running_loop().create_future()
        self._answers[call.call_id] = answer
        try:
            # Shielded: a test that stops waiting must not cut a message in half.
            await asyncio.shield(self._write(call))
            async with asyncio.timeout(CALL_TIMEOUT_S):
                return await answer
        finally:
            del self._answers[call.call_id]

    async def close(self) -> None:
        self._call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self._reader


@dataclass
class Registryd:
    """One running registry server, a stub connected to it and its `Slots` stream."""

    stub: registry_pb2_grpc.RegistryStub
    slots: SlotStream
    clock: FakeClock

    async def stats(self) -> registry_pb2.StatsReply:
        reply: registry_pb2.StatsReply = await self.stub.Stats(
            registry_pb2.StatsRequest(), timeout=CALL_TIMEOUT_S
        )
        return reply

    async def until(self, predicate: Callable[[registry_pb2.StatsReply], bool], what: str) -> None:
        """Poll Stats until ``predicate`` holds (bounded, so a bug fails instead of hanging)."""
        for _ in range(1000):
            if predicate(await self.stats()):
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"registry never reached: {what}")

    async def queued(self, depth: int) -> None:
        await self.until(lambda s: s.queue_depth == depth, f"queue depth {depth}")


Start = Callable[..., Awaitable[Registryd]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``await start(**settings)``: a registry server with those `RegistrySettings`."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def _start(**settings: Any) -> Registryd:
        clock = FakeClock()
        core = Registry(RegistrySettings(**settings), clock=clock, rng=random.Random(7))
        running = await registry_server.start(RegistryConfig(port=0), core)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        stub = registry_pb2_grpc.RegistryStub(channel)
        slots = SlotStream(stub)
        cleanups.append(lambda: running.stop(0))
        cleanups.append(channel.close)
        cleanups.append(slots.close)
        return Registryd(stub, slots, clock)

    yield _start
    for cleanup in reversed(cleanups):
        await cleanup()


def model(
    model_id: str = MODEL,
    *,
    max_concurrency: int = 1,
    is_vision: bool = False,
    **tri: bool,
) -> common_pb2.ModelInfo:
    """A model card; ``tri`` sets the tri-state flags (template_render_ok, cap_tools, ...)."""
    return common_pb2.ModelInfo(
        id=model_id, is_vision=is_vision, max_concurrency=max_concurrency, **tri
    )


def provider(
    provider_id: str,
    *models: common_pb2.ModelInfo,
    version: str = "0.7.0",
    trusted: bool = True,
) -> registry_pb2.ProviderInfo:
    return registry_pb2.ProviderInfo(
        id=provider_id,
        serial=f"serial-{provider_id}",
        version=version,
        models=list(models) or [model()],
        trusted=trusted,
        decode_tps=50.0,
        prefill_tps=1000.0,
    )


async def upsert(r: Registryd, *providers: registry_pb2.ProviderInfo) -> None:
    for p in providers:
        await r.stub.UpsertProvider(
            registry_pb2.UpsertProviderRequest(provider=p), timeout=CALL_TIMEOUT_S
        )


async def remove(r: Registryd, provider_id: str) -> None:
    await r.stub.RemoveProvider(
        registry_pb2.RemoveProviderRequest(provider_id=provider_id), timeout=CALL_TIMEOUT_S
    )


async def heartbeat(
    r: Registryd, provider_id: str, *loads: registry_pb2.ModelLoad, trusted: bool = True
) -> None:
    await r.stub.ReportLoad(
        registry_pb2.ReportLoadRequest(provider_id=provider_id, loads=loads, trusted=trusted),
        timeout=CALL_TIMEOUT_S,
    )


async def answer(
    r: Registryd,
    traits: common_pb2.Traits = PLAIN,
    *,
    model_id: str = MODEL,
    may_queue: bool = False,
    allowlist: Iterable[str] = (),
    timeout_s: float = 0.0,
    reservation_id: str = "",
) -> registry_pb2.SlotAnswer:
    """The registry's answer to one Reserve (``may_queue``: a request's first, its
    admission; ``timeout_s``: the longest it may wait in the queue, 0 = the registry's)."""
    request = registry_pb2.ReserveRequest(
        model=model_id,
        traits=traits,
        may_queue=may_queue,
        allowlist=list(allowlist),
        reservation_id=reservation_id,
    )
    return await r.slots.call(registry_pb2.SlotCall(reserve=request, timeout_s=timeout_s))


async def reserve(
    r: Registryd, traits: common_pb2.Traits = PLAIN, **kwargs: Any
) -> registry_pb2.ReserveReply:
    """A Reserve that must be granted."""
    got = await answer(r, traits, **kwargs)
    assert got.WhichOneof("answer") == "reserved", got
    return got.reserved


async def refused(r: Registryd, traits: common_pb2.Traits = PLAIN, **kwargs: Any) -> Failure:
    """A Reserve that must be refused: the refusal, as the dispatcher reads it."""
    got = await answer(r, traits, **kwargs)
    assert got.WhichOneof("answer") == "refused", got
    return Failure.from_proto(got.refused)


async def release(
    r: Registryd, reservation_id: str, status: int = 200
) -> registry_pb2.ReleaseReply:
    request = registry_pb2.ReleaseRequest(reservation_id=reservation_id, status_code=status)
    got = await r.slots.call(registry_pb2.SlotCall(release=request))
    assert got.WhichOneof("answer") == "released", got
    return got.released


async def granted(r: Registryd, traits: common_pb2.Traits = PLAIN, **kwargs: Any) -> None:
    """A first Reserve is granted a slot at once (given back at once, neutral)."""
    reply = await reserve(r, traits, may_queue=True, **kwargs)
    assert reply.queued_s == 0
    assert (await release(r, reply.reservation_id, status=0)).released


_waits = itertools.count(1)


async def waits(r: Registryd, traits: common_pb2.Traits = PLAIN, **kwargs: Any) -> None:
    """A first Reserve waits in the queue; the wait is then given up (Release of its id,
    as the dispatcher cancels one) and leaves nothing behind."""
    depth = (await r.stats()).queue_depth
    rid = f"waiter-{next(_waits)}"
    call = asyncio.ensure_future(answer(r, traits, may_queue=True, reservation_id=rid, **kwargs))
    await r.queued(depth + 1)
    assert not call.done()
    call.cancel()
    assert not (await release(r, rid, status=0)).released
    await r.queued(depth)
    with contextlib.suppress(asyncio.CancelledError):
        await call


def reason_codes(row: registry_pb2.ProviderVerdict) -> set[str]:
    return {reason.split("(", 1)[0] for reason in row.reasons}


# ---------------------------------------------------------------------------- A6/A7 ladder


async def test_a7_first_reserve_is_granted_when_a_capable_provider_has_a_free_slot(
    start: Start,
) -> None:
    r = await start()
    await upsert(r, provider("p1", model(is_vision=True)))
    for traits in (PLAIN, TOOLS, VISION):
        await granted(r, traits)
    assert (await r.stats()).slots_in_use == 0


async def test_a7_first_reserve_waits_when_capable_providers_are_at_capacity(
    start: Start,
) -> None:
    r = await start()
    await upsert(r, provider("p1", model(max_concurrency=2)))
    held = [await reserve(r), await reserve(r)]
    await waits(r)
    await waits(r, TOOLS)
    await release(r, held[0].reservation_id)
    await granted(r)
    await release(r, held[1].reservation_id)


async def test_a7_only_reconnecting_providers_queue_and_their_return_serves_the_wait(
    start: Start,
) -> None:
    r = await start(reconnect_grace_s=60.0)
    await upsert(r, provider("p1"))
    await remove(r, "p1")
    r.clock.advance(30.0)  # within the reconnect grace
    waiting = asyncio.ensure_future(reserve(r, may_queue=True))
    await r.queued(1)
    # A6 counts only *online* tools-capable providers: a tools request never waits on one.
    refusal = await refused(r, TOOLS, may_queue=True)
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    await r.queued(1)

    await upsert(r, provider("p1"))  # the provider reconnects
    served = await waiting
    assert served.provider_id == "p1"
    assert (await r.stats()).queue_depth == 0
    assert (await release(r, served.reservation_id)).released


async def test_a7_retry_during_reconnect_does_not_queue(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    await remove(r, "p1")
    refusal = await refused(r, may_queue=False)
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    assert (await r.stats()).queue_depth == 0


async def test_a3_unknown_model_is_404(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    refusal = await refused(r, model_id="nope", may_queue=True)
    assert (refusal.status, refusal.code, refusal.retry_after_s) == (404, "model_not_found", 0)
    assert "nope" in refusal.message


TOOLS_INCAPABLE = {
    "below_floor": provider("p1", version="0.6.2"),
    "missing_version": provider("p1", version=""),
    "template_broken": provider("p1", model(template_render_ok=False)),
    "tools_template_false": provider("p1", model(cap_tools=False)),
}


@pytest.mark.parametrize("case", sorted(TOOLS_INCAPABLE))
async def test_a6_tools_without_a_capable_provider_is_503_at_once(start: Start, case: str) -> None:
    r = await start()  # default 120 s queue wait: a queued call would hit CALL_TIMEOUT_S
    await upsert(r, TOOLS_INCAPABLE[case])
    refusal = await refused(r, TOOLS, may_queue=True)
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    assert "0.6.3" in refusal.message and "template" in refusal.message
    assert (await r.stats()).queue_depth == 0


async def test_a6_tools_503_beats_capacity_when_the_full_provider_is_below_floor(
    start: Start,
) -> None:
    r = await start()
    await upsert(r, provider("p1", version="0.5.0"))
    held = await reserve(r)  # a plain request fills it: plain would queue, tools never
    await waits(r)
    refusal = await refused(r, TOOLS, may_queue=True)
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    assert (await r.stats()).queue_depth == 0
    await release(r, held.reservation_id)


VISION_INCAPABLE = {
    "not_vision": provider("p1", model(is_vision=False)),
    "template_broken": provider("p1", model(is_vision=True, template_render_ok=False)),
    "vision_template_false": provider("p1", model(is_vision=True, cap_vision=False)),
}


@pytest.mark.parametrize("case", sorted(VISION_INCAPABLE))
async def test_a6_vision_without_a_capable_provider_is_503_at_once(start: Start, case: str) -> None:
    r = await start()
    await upsert(r, VISION_INCAPABLE[case])
    refusal = await refused(r, VISION, may_queue=True)
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    assert (await r.stats()).queue_depth == 0


async def test_a7_nothing_eligible_is_503_with_retry_after(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1", trusted=False))  # online, serves the model, never routable
    refusal = await refused(r, may_queue=True)
    assert (refusal.status, refusal.code, refusal.retry_after_s) == (503, "model_unavailable", 2)
    assert (await r.stats()).queue_depth == 0


async def test_a7_queue_full_is_429_rate_limited_with_retry_after(start: Start) -> None:
    r = await start(queue_max_depth=1)
    await upsert(r, provider("p1"))
    held = await reserve(r)
    waiting = asyncio.ensure_future(reserve(r, may_queue=True))
    await r.queued(1)

    refusal = await refused(r, may_queue=True)
    # one waiter x 3 s, clamped to 2..30
    assert (refusal.status, refusal.code, refusal.retry_after_s) == (429, "rate_limit_exceeded", 3)

    await release(r, held.reservation_id)
    served = await waiting
    await release(r, served.reservation_id)
    stats = await r.stats()
    assert (stats.slots_in_use, stats.queue_depth) == (0, 0)


async def test_a7_queue_timeout_is_429_with_retry_after(start: Start) -> None:
    r = await start(queue_wait_s=0.2)
    await upsert(r, provider("p1"))
    held = await reserve(r)
    refusal = await refused(r, may_queue=True)
    assert (refusal.status, refusal.code, refusal.retry_after_s) == (429, "rate_limit_exceeded", 2)
    stats = await r.stats()
    assert (stats.slots_in_use, stats.queue_depth) == (1, 0)
    await release(r, held.reservation_id)


async def test_b11_retry_that_may_not_queue_is_429_when_capable_providers_are_full(
    start: Start,
) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    held = await reserve(r)
    refusal = await refused(r, may_queue=False)
    assert (refusal.status, refusal.code, refusal.retry_after_s) == (429, "rate_limit_exceeded", 2)
    assert (await r.stats()).queue_depth == 0
    await release(r, held.reservation_id)


# ---------------------------------------------------------------------------- C1 gates


async def test_a6_capability_check_honours_the_allowlist(start: Start) -> None:
    r = await start()
    await upsert(r, provider("old", version="0.6.0"), provider("new", version="0.7.0"))
    only_old = ["serial-old"]
    await granted(r, TOOLS)
    refusal = await refused(r, TOOLS, may_queue=True, allowlist=only_old)
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    await granted(r, PLAIN, allowlist=only_old)
    new = await reserve(r, TOOLS, allowlist=["serial-new"])
    assert new.provider_id == "new"
    await release(r, new.reservation_id)


async def cool_for_tools(r: Registryd, provider_id: str) -> None:
    """Two counted failures on tools requests through real Release calls (C4)."""
    entered = []
    for _ in range(2):
        held = await reserve(r, TOOLS, allowlist=[f"serial-{provider_id}"])
        assert held.provider_id == provider_id
        reply = await release(r, held.reservation_id, status=500)
        assert reply.released
        entered.append(reply.cooldown_entered)
    assert entered == [False, True]


async def test_c4_cooled_pair_is_not_capacity_tools_503_at_once_plain_still_routes(
    start: Start,
) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    await cool_for_tools(r, "p1")
    assert (await r.stats()).cooldowns_entered == 1

    refusal = await refused(r, TOOLS, may_queue=True)
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    assert (await r.stats()).queue_depth == 0

    plain = await reserve(r, PLAIN, may_queue=True)
    assert plain.queued_s == 0
    assert plain.provider_id == "p1"
    # Full *and* cooled for tools: still 503 at once for tools, a queue for plain.
    assert (await refused(r, TOOLS, may_queue=True)).status == 503
    await waits(r, PLAIN)
    await release(r, plain.reservation_id)


async def test_c4_cooled_pair_does_not_count_but_a_full_capable_provider_queues(
    start: Start,
) -> None:
    r = await start()
    await upsert(r, provider("cool"), provider("busy"))
    await cool_for_tools(r, "cool")
    held = await reserve(r, TOOLS)
    assert held.provider_id == "busy", "the cooled pair is never selected for tools"
    await waits(r, TOOLS)
    await release(r, held.reservation_id)
    await granted(r, TOOLS)


async def test_c4_non_counted_codes_never_cool(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    for status in (503, 400, 503, 0, 429):
        held = await reserve(r, TOOLS)
        assert not (await release(r, held.reservation_id, status=status)).cooldown_entered
    await granted(r, TOOLS)
    assert (await r.stats()).cooldowns_entered == 0


async def test_c4_reregistration_starts_clean(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    await cool_for_tools(r, "p1")
    await upsert(r, provider("p1"))
    await granted(r, TOOLS)


# ---------------------------------------------------------------------------- reserve / release


async def test_b12_reserve_returns_a_reservation_released_exactly_once(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1", version="0.6.9"))
    held = await reserve(r, TOOLS)
    assert held.reservation_id
    assert (held.provider_id, held.provider_version) == ("p1", "0.6.9")
    assert (await r.stats()).slots_in_use == 1
    assert (await release(r, held.reservation_id)).released
    assert not (await release(r, held.reservation_id)).released
    assert not (await release(r, "no-such-reservation")).released
    assert (await r.stats()).slots_in_use == 0


async def test_c6_queued_reserves_are_served_fifo_when_slots_free(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    held = await reserve(r)
    waits: list[asyncio.Future[registry_pb2.ReserveReply]] = []
    for depth in (1, 2, 3):
        waits.append(asyncio.ensure_future(reserve(r, may_queue=True)))
        await r.queued(depth)  # queued strictly one after the other

    current = held
    for index, wait in enumerate(waits):
        await release(r, current.reservation_id)
        current = await wait
        assert all(not w.done() for w in waits[index + 1 :]), "served out of order"
        assert current.provider_id == "p1"
        assert current.queued_s >= 0
    await release(r, current.reservation_id)
    stats = await r.stats()
    assert (stats.slots_in_use, stats.queue_depth) == (0, 0)


async def test_c6_queued_reserves_are_served_fifo_when_a_provider_registers(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    held = await reserve(r)
    first = asyncio.ensure_future(reserve(r, may_queue=True))
    await r.queued(1)
    second = asyncio.ensure_future(reserve(r, may_queue=True))
    await r.queued(2)

    await upsert(r, provider("p2"))
    assert (await first).provider_id == "p2"
    await r.queued(1)
    assert not second.done()

    await release(r, held.reservation_id)
    assert (await second).provider_id == "p1"
    for reply in (first.result(), second.result()):
        assert (await release(r, reply.reservation_id)).released
    assert (await r.stats()).slots_in_use == 0


async def test_c6_cancelled_reserve_leaves_no_waiter_and_no_slot(start: Start) -> None:
    """A dispatcher gives up a queued Reserve by releasing its id (B12)."""
    r = await start()
    await upsert(r, provider("p1"))
    held = await reserve(r)
    call = asyncio.ensure_future(answer(r, may_queue=True, reservation_id="given-up"))
    await r.queued(1)

    call.cancel()
    assert not (await release(r, "given-up", status=0)).released
    await r.queued(0)

    await release(r, held.reservation_id)
    stats = await r.stats()
    assert stats.slots_in_use == 0, "the freed slot went to a cancelled waiter"
    fresh = await reserve(r)  # may_queue=False: the slot really is free
    await release(r, fresh.reservation_id)
    assert (await r.stats()).slots_in_use == 0


async def test_c6_waiters_fail_at_once_when_the_last_capable_provider_leaves(
    start: Start,
) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    held = await reserve(r)
    waiting = asyncio.ensure_future(refused(r, may_queue=True))
    await r.queued(1)
    await remove(r, "p1")
    refusal = await waiting
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    assert (await r.stats()).queue_depth == 0
    assert (await release(r, held.reservation_id)).released
    assert (await r.stats()).slots_in_use == 0


async def test_b12_concurrent_reserve_release_never_oversubscribes(start: Start) -> None:
    r = await start(queue_max_depth=100)
    capacity = {"p1": 1, "p2": 2, "p3": 3}
    await upsert(r, *(provider(pid, model(max_concurrency=n)) for pid, n in capacity.items()))
    in_use: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    served: Counter[str] = Counter()

    async def one(index: int) -> None:
        traits = TOOLS if index % 3 == 0 else PLAIN
        reply = await reserve(r, traits, may_queue=True)
        pid = reply.provider_id
        in_use[pid] += 1
        peak[pid] = max(peak[pid], in_use[pid])
        assert in_use[pid] <= capacity[pid], f"{pid} oversubscribed"
        served[pid] += 1
        for _ in range(index % 4):
            await asyncio.sleep(0)
        in_use[pid] -= 1  # before the Release: its slot may be granted while it is in flight
        assert (await release(r, reply.reservation_id)).released

    await asyncio.gather(*(one(i) for i in range(100)))
    assert sum(served.values()) == 100
    assert all(peak[pid] <= n for pid, n in capacity.items())
    stats = await r.stats()
    assert (stats.slots_in_use, stats.queue_depth) == (0, 0)


# ---------------------------------------------------------------------------- C7, models, liveness


async def test_c7_explain_lists_every_provider_with_every_reason(start: Start) -> None:
    r = await start()
    vision = model(is_vision=True)
    await upsert(
        r,
        provider("good", vision),
        provider("old", vision, version="0.5.0"),
        provider("broken", model(is_vision=True, template_render_ok=False)),
        provider("cooling", vision),
        provider("full", vision),
        provider("text", model(is_vision=False)),
        provider("gone", vision),
        provider("shady", vision, trusted=False),
        provider("outsider", vision),
        provider("many", model(is_vision=False)),
    )
    await cool_for_tools(r, "cooling")
    full = await reserve(r, allowlist=["serial-full"])
    await remove(r, "gone")
    # Everything at once on one provider: cooled for tools, full, untrusted, offline.
    await cool_for_tools(r, "many")
    many = await reserve(r, allowlist=["serial-many"])
    await heartbeat(r, "many", trusted=False)
    await remove(r, "many")

    allowlist = [
        f"serial-{p}"
        for p in ("good", "old", "broken", "cooling", "full", "text", "gone", "shady", "many")
    ]
    both = common_pb2.Traits(has_tools=True, requires_vision=True)
    reply = await r.stub.Explain(
        registry_pb2.ExplainRequest(model=MODEL, traits=both, allowlist=allowlist),
        timeout=CALL_TIMEOUT_S,
    )
    rows = {row.provider_id: row for row in reply.providers}
    expected = {
        "good": set(),
        "old": {"below_floor"},
        "broken": {"template_broken"},
        "cooling": {"cooling_down_until"},
        "full": {"at_capacity"},
        "text": {"not_vision"},
        "gone": {"offline"},
        "shady": {"untrusted"},
        "outsider": {"not_in_allowlist"},
        "many": {"offline", "untrusted", "not_vision", "cooling_down_until", "at_capacity"},
    }
    assert {pid: reason_codes(row) for pid, row in rows.items()} == expected
    assert [pid for pid, row in rows.items() if row.eligible] == ["good"]
    assert rows["old"].version == "0.5.0"
    assert any("0.5.0" in reason for reason in rows["old"].reasons), "floor detail shown"

    not_allowed = await r.stub.Explain(
        registry_pb2.ExplainRequest(model=MODEL, traits=PLAIN, allowlist=["serial-good"]),
        timeout=CALL_TIMEOUT_S,
    )
    plain_rows = {row.provider_id: reason_codes(row) for row in not_allowed.providers}
    assert plain_rows["good"] == set()
    assert plain_rows["cooling"] == {"not_in_allowlist"}, "cooling is per shape"
    assert plain_rows["text"] == {"not_in_allowlist"}, "not_vision only for vision requests"
    for held in (full, many):
        assert (await release(r, held.reservation_id)).released


async def test_a1_list_models_lists_only_models_of_online_trusted_providers(
    start: Start,
) -> None:
    r = await start()
    await upsert(
        r,
        provider("p1", model("alpha"), model("shared")),
        provider("p2", model("beta"), trusted=False),
        provider("p3", model("gamma"), model("shared")),
        provider("p4", model("delta")),
    )
    await remove(r, "p3")
    await heartbeat(r, "p4", trusted=False)
    reply = await r.stub.ListModels(registry_pb2.ListModelsRequest(), timeout=CALL_TIMEOUT_S)
    assert list(reply.models) == ["alpha", "shared"]


async def test_c1_report_load_keeps_a_provider_online(start: Start) -> None:
    r = await start(heartbeat_timeout_s=15.0, reconnect_grace_s=60.0)
    await upsert(r, provider("loaded"), provider("idle"), provider("silent"))
    for _ in range(4):  # 40 s: far past the 15 s silence limit
        r.clock.advance(10.0)
        await heartbeat(r, "loaded", registry_pb2.ModelLoad(model=MODEL, running=1))
        await heartbeat(r, "idle")  # a load-less heartbeat keeps it alive too
    stats = await r.stats()
    assert list(stats.online_provider_ids) == ["idle", "loaded"]
    explain = await r.stub.Explain(
        registry_pb2.ExplainRequest(model=MODEL, traits=PLAIN), timeout=CALL_TIMEOUT_S
    )
    reasons = {row.provider_id: reason_codes(row) for row in explain.providers}
    assert reasons == {"loaded": set(), "idle": set(), "silent": {"offline"}}
    held = [await reserve(r), await reserve(r)]
    assert {h.provider_id for h in held} == {"idle", "loaded"}
    # Only the silent one is left, and it was seen within the reconnect grace: a queue.
    await waits(r)
    for h in held:
        await release(r, h.reservation_id)


async def test_f1_report_load_untrusted_makes_a_provider_unroutable(start: Start) -> None:
    r = await start()
    await upsert(r, provider("p1"))
    await granted(r)
    await heartbeat(r, "p1", trusted=False)
    refusal = await refused(r, may_queue=True)
    assert (refusal.status, refusal.code) == (503, "model_unavailable")
    stats = await r.stats()
    assert (list(stats.online_provider_ids), stats.providers_online) == ([], 0)
    assert stats.queue_depth == 0
    # A later trusted heartbeat does not restore trust; only a new registration does.
    await heartbeat(r, "p1", trusted=True)
    assert (await refused(r, may_queue=True)).status == 503
    await upsert(r, provider("p1"))
    await granted(r)


async def test_a7_queue_wait_is_bounded_by_the_call_budget(start: Start) -> None:
    r = await start()  # 120 s queue wait: the call's 0.5 s budget must bound it
    await upsert(r, provider("p1"))
    held = await reserve(r)
    refusal = await refused(r, may_queue=True, timeout_s=0.5)
    assert (refusal.status, refusal.code) == (429, "rate_limit_exceeded"), "a 429, not a hang"
    stats = await r.stats()
    assert (stats.slots_in_use, stats.queue_depth) == (1, 0)
    await release(r, held.reservation_id)
