"""The Registry facade: A6/A7 admission (a request's first Reserve), reserve/release with
slots and the queue (C5, C6), the breaker feed (C4), explain (C7), the provider table, models
and stats."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from registry_svc.eligibility import ReasonCode
from registry_svc.errors import (
    ModelTooLarge,
    NoCapableProvider,
    NoEligibleProvider,
    ProvidersBusy,
    QueueFull,
    QueueTimeout,
    RegistryError,
    UnknownModel,
)
from registry_svc.model import Ask, ModelLoad, Outcome, RegistrySettings, Shape, Traits
from registry_svc.registry import Registry
from registry_svc.reservations import Reservation
from tests.fakes.clock import FakeClock
from tests.fakes.registry import make_registry, model, provider

TOOLS = Traits(has_tools=True)
VISION = Traits(requires_vision=True)
BASE = Traits()


async def settle() -> None:
    """Let queued callbacks and woken tasks run (no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


def in_use(registry: Registry) -> int:
    return registry.stats().slots_in_use


async def granted(registry: Registry, ask: Ask) -> Reservation:
    """The answer to ``ask`` is a slot now (then given back, neutral)."""
    reservation = await registry.reserve(ask)
    assert reservation.queued_s == 0
    assert registry.release(reservation.id, Outcome(Outcome.CANCELLED)).released
    return reservation


async def refused(registry: Registry, ask: Ask) -> RegistryError:
    """The answer to ``ask`` is a refusal, at once: nothing is left queued."""
    depth = registry.queue_depth(ask.model_id)
    with pytest.raises(RegistryError) as info:
        await registry.reserve(ask)
    assert registry.queue_depth(ask.model_id) == depth
    return info.value


async def waits(registry: Registry, ask: Ask) -> asyncio.Task[Reservation]:
    """The answer to ``ask`` is a place in the model's queue; the caller ends the wait."""
    depth = registry.queue_depth(ask.model_id)
    task = asyncio.create_task(registry.reserve(ask))
    await settle()
    assert not task.done() and registry.queue_depth(ask.model_id) == depth + 1
    return task


async def stop(*tasks: asyncio.Task[Reservation]) -> None:
    for task in tasks:
        task.cancel()
    await settle()


# --------------------------------------------------------------------------- admission


async def test_a3_unknown_model_is_404() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    err = await refused(registry, Ask("nope"))
    assert isinstance(err, UnknownModel)
    assert (err.http_status, err.code) == (404, "model_not_found")
    assert err.retry_after_s is None
    assert "nope" in err.message


async def test_a7_eligible_is_a_slot_at_once() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    assert (await granted(registry, Ask("m", TOOLS))).provider_id == "p1"


@pytest.mark.parametrize(
    "broken",
    [
        {"version": "0.6.2"},
        {"version": ""},
        {"models": {"m": model(cap_tools=False)}},
        {"models": {"m": model(template_render_ok=False)}},
    ],
)
async def test_a6_tools_without_a_capable_provider_fails_at_once(broken: dict[str, object]) -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", **broken))  # type: ignore[arg-type]
    err = await refused(registry, Ask("m", TOOLS))
    assert isinstance(err, NoCapableProvider)
    assert (err.http_status, err.code) == (503, "model_unavailable")
    assert "tool calls" in err.message and ">= 0.6.3" in err.message
    assert "chat template" in err.message
    assert err.capability is Shape.TOOLS


async def test_a6_tools_capability_ignores_capacity() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("old", version="0.6.2"))
    registry.upsert_provider(provider("new", models={"m": model(max_concurrency=0)}))
    await stop(await waits(registry, Ask("m", TOOLS)))


async def test_a6_vision_without_a_capable_provider_fails_at_once() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("text"))
    registry.upsert_provider(provider("bad", models={"m": model(is_vision=True, cap_vision=False)}))
    err = await refused(registry, Ask("m", VISION))
    assert isinstance(err, NoCapableProvider)
    assert "image or video" in err.message
    await granted(registry, Ask("m", BASE))


async def test_a6_capability_check_honours_the_allowlist() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("good", serial="S-GOOD"))
    registry.upsert_provider(provider("old", serial="S-OLD", version="0.6.0"))
    await granted(registry, Ask("m", TOOLS))
    only_old = Ask("m", TOOLS, allowlist=frozenset({"S-OLD"}))
    assert isinstance(await refused(registry, only_old), NoCapableProvider)
    await granted(registry, Ask("m", TOOLS, allowlist=frozenset({"S-GOOD"})))
    await granted(registry, Ask("m", TOOLS, allowlist=frozenset()))  # empty = none


async def test_a6_cooled_pair_is_not_capacity_for_tools_but_base_still_routes() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=4)}))
    for _ in range(2):
        r = await registry.reserve(Ask("m", TOOLS))
        registry.release(r.id, Outcome(500))
    assert isinstance(await refused(registry, Ask("m", TOOLS)), NoCapableProvider)
    r = await registry.reserve(Ask("m", BASE))
    assert r.provider_id == "p1"


async def test_a7_at_capacity_queues_then_rate_limits_when_the_queue_is_full() -> None:
    registry, _ = make_registry(RegistrySettings(queue_max_depth=2))
    registry.upsert_provider(provider("p1"))
    await registry.reserve(Ask("m"))
    waiters = [await waits(registry, Ask("m")) for _ in range(2)]
    err = await refused(registry, Ask("m"))
    assert isinstance(err, QueueFull)
    assert (err.http_status, err.code) == (429, "rate_limit_exceeded")
    assert err.retry_after_s == 6  # depth 2 x 3 s
    await stop(*waiters)


async def test_a7_reconnecting_providers_queue_until_the_grace_ends() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    assert registry.remove_provider("p1")
    clock.advance(59)
    waiting = await waits(registry, Ask("m"))
    # Waiting on a reconnect, not on capacity: a retry gets 503, not "busy" (429).
    assert isinstance(await refused(registry, Ask("m", may_queue=False)), NoEligibleProvider)
    await stop(waiting)
    clock.advance(2)
    # Gone for longer than the grace: as if nobody had ever served the model.
    assert isinstance(await refused(registry, Ask("m")), UnknownModel)


async def test_a7_silent_provider_counts_as_reconnecting() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    clock.advance(16)  # no heartbeat for longer than 15 s
    waiting = await waits(registry, Ask("m"))
    assert isinstance(await refused(registry, Ask("m", may_queue=False)), NoEligibleProvider)
    await stop(waiting)


async def test_a7_nothing_eligible_is_503_with_retry_after() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", trusted=False))
    err = await refused(registry, Ask("m"))
    assert isinstance(err, NoEligibleProvider)
    assert (err.http_status, err.code, err.retry_after_s) == (503, "model_unavailable", 2)


async def test_a7_only_too_large_is_503() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("small", models={"m": model(max_context_tokens=1000)}))
    registry.upsert_provider(provider("full", trusted=False))
    err = await refused(registry, Ask("m", prompt_tokens=900, max_tokens=200))
    assert isinstance(err, ModelTooLarge)
    assert (err.http_status, err.code) == (503, "model_too_large")
    await granted(registry, Ask("m", prompt_tokens=700, max_tokens=200))
    # max_tokens defaults to 256 for the estimate.
    assert isinstance(await refused(registry, Ask("m", prompt_tokens=745)), ModelTooLarge)
    await granted(registry, Ask("m", prompt_tokens=744))


async def test_a7_retry_after_follows_queue_depth() -> None:
    registry, _ = make_registry(RegistrySettings(queue_max_depth=20))
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=0)}))
    assert registry.retry_after_s("m") == 2
    waiters: list[asyncio.Task[Reservation]] = []
    # depth x 3 s, clamped to 2..30
    for depth, expected in [(1, 3), (4, 12), (10, 30), (11, 30)]:
        while len(waiters) < depth:
            waiters.append(asyncio.create_task(registry.reserve(Ask("m"))))
        await settle()
        assert registry.queue_depth("m") == depth
        assert registry.retry_after_s("m") == expected
    for task in waiters:
        task.cancel()
    await settle()
    assert registry.retry_after_s("m") == 2


async def test_a7_retry_after_constants_are_settings() -> None:
    settings = RegistrySettings(
        retry_after_empty_s=1, retry_after_per_waiter_s=1, retry_after_min_s=5, retry_after_max_s=6
    )
    registry, _ = make_registry(settings)
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=0)}))
    assert registry.retry_after_s("m") == 1
    waiters = [asyncio.create_task(registry.reserve(Ask("m"))) for _ in range(7)]
    await settle()
    assert registry.retry_after_s("m") == 6  # 7 x 1, clamped down
    for task in waiters[1:]:
        task.cancel()
    await settle()
    assert registry.retry_after_s("m") == 5  # 1 x 1, clamped up
    waiters[0].cancel()
    await settle()


async def test_a7_admissions_are_counted_by_the_rung_of_the_first_reserve() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    await granted(registry, Ask("m"))
    held = await registry.reserve(Ask("m"))
    waiting = await waits(registry, Ask("m"))
    clock.advance(1)
    registry.release(held.id, Outcome(200))
    queued = await waiting
    assert queued.queued_s == 1
    registry.release(queued.id, Outcome(200))
    await refused(registry, Ask("zzz"))
    assert registry.stats().admissions == {"ok": 2, "queue": 1, "unknown_model": 1}


# --------------------------------------------------------------------------- reserve/release


async def test_c5_reserve_picks_the_cheapest_and_takes_a_slot() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("slow", decode_tps=10, version="0.6.4"))
    registry.upsert_provider(provider("fast", decode_tps=500, version="0.6.5"))
    r = await registry.reserve(Ask("m", TOOLS, prompt_tokens=100, max_tokens=256))
    assert (r.provider_id, r.provider_version, r.model_id, r.shape) == (
        "fast",
        "0.6.5",
        "m",
        Shape.TOOLS,
    )
    assert r.queued_s == 0
    assert in_use(registry) == 1
    # The fast one is full now; the slow one is next.
    r2 = await registry.reserve(Ask("m", TOOLS))
    assert r2.provider_id == "slow" and r2.id != r.id
    assert registry.release(r.id, Outcome(200)).released
    assert registry.release(r2.id, Outcome(200)).released
    assert in_use(registry) == 0


async def test_b12_second_release_is_a_no_op() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=2)}))
    r = await registry.reserve(Ask("m"))
    await registry.reserve(Ask("m"))
    assert registry.release(r.id, Outcome(500)).released
    second = registry.release(r.id, Outcome(500))
    assert (second.released, second.cooldown_entered) == (False, False)
    assert in_use(registry) == 1  # the other slot was not freed twice
    assert not registry.release("unknown", Outcome(200)).released


async def test_c5_load_reports_change_the_choice() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("a", decode_tps=100))
    registry.upsert_provider(provider("b", decode_tps=100))
    assert registry.update_load("a", {"m": ModelLoad(waiting=3)})
    r = await registry.reserve(Ask("m"))
    assert r.provider_id == "b"
    assert not registry.update_load("ghost", {})


async def test_c1_reserve_honours_exclude_and_allowlist() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("fast", serial="S-F", decode_tps=500))
    registry.upsert_provider(provider("slow", serial="S-S", decode_tps=10))
    r = await registry.reserve(Ask("m", exclude=frozenset({"fast"})))
    assert r.provider_id == "slow"
    registry.release(r.id, Outcome(0))
    r = await registry.reserve(Ask("m", allowlist=frozenset({"S-S"})))
    assert r.provider_id == "slow"
    registry.release(r.id, Outcome(0))
    with pytest.raises(NoEligibleProvider):
        await registry.reserve(Ask("m", exclude=frozenset({"fast", "slow"})))
    with pytest.raises(NoEligibleProvider):
        await registry.reserve(Ask("m", allowlist=frozenset({"S-NONE"})))


async def test_b10_reserve_avoids_the_failed_version_softly() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("same", version="0.6.4", decode_tps=500))
    registry.upsert_provider(provider("other", version="0.6.5", decode_tps=10))
    r = await registry.reserve(Ask("m", avoid_version="0.6.4"))
    assert r.provider_id == "other"
    r2 = await registry.reserve(Ask("m", avoid_version="0.6.4"))  # only 0.6.4 left: use it
    assert r2.provider_id == "same"


async def test_c5_equal_providers_share_load() -> None:
    registry, _ = make_registry(seed=3)
    for pid in ("a", "b", "c"):
        registry.upsert_provider(provider(pid))
    seen = set()
    for _ in range(30):
        r = await registry.reserve(Ask("m"))
        seen.add(r.provider_id)
        registry.release(r.id, Outcome(200))
    assert seen == {"a", "b", "c"}


async def test_a3_reserve_unknown_model_raises() -> None:
    registry, _ = make_registry()
    with pytest.raises(UnknownModel) as info:
        await registry.reserve(Ask("m"))
    assert (info.value.http_status, info.value.code) == (404, "model_not_found")


async def test_a6_reserve_without_tools_capable_provider_never_queues() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", version="0.6.2"))
    with pytest.raises(NoCapableProvider):
        await registry.reserve(Ask("m", TOOLS))
    assert registry.queue_depth("m") == 0


async def test_a7_reserve_too_large_raises() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_context_tokens=10)}))
    with pytest.raises(ModelTooLarge):
        await registry.reserve(Ask("m", prompt_tokens=5, max_tokens=6))


async def test_b11_retries_never_queue() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    await registry.reserve(Ask("m"))
    with pytest.raises(ProvidersBusy) as info:
        await registry.reserve(Ask("m", may_queue=False))
    assert info.value.http_status == 429 and info.value.retry_after_s == 2
    assert registry.queue_depth("m") == 0
    registry.remove_provider("p1")
    with pytest.raises(NoEligibleProvider):  # reconnecting only: 503, not 429
        await registry.reserve(Ask("m", may_queue=False))


async def test_a7_queue_full_raises_429() -> None:
    registry, _ = make_registry(RegistrySettings(queue_max_depth=1))
    registry.upsert_provider(provider("p1"))
    await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    with pytest.raises(QueueFull) as info:
        await registry.reserve(Ask("m"))
    assert info.value.http_status == 429 and info.value.retry_after_s == 3
    waiter.cancel()
    await settle()


# --------------------------------------------------------------------------- queue


async def test_c6_waiters_are_served_fifo_when_slots_free() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    first = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    clock.advance(1)
    second = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    assert registry.queue_depth("m") == 2
    clock.advance(4)
    registry.release(held.id, Outcome(200))
    await settle()
    assert first.done() and not second.done()
    got = first.result()
    assert got.provider_id == "p1" and got.queued_s == 5
    registry.release(got.id, Outcome(200))
    await settle()
    assert second.result().queued_s == 4
    registry.release(second.result().id, Outcome(200))
    assert in_use(registry) == 0 and registry.queue_depth("m") == 0


async def test_c6_a_new_request_does_not_jump_the_queue() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    registry.release(held.id, Outcome(200))
    newcomer = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    assert waiter.done() and not newcomer.done()
    registry.release(waiter.result().id, Outcome(200))
    await settle()
    registry.release(newcomer.result().id, Outcome(200))
    assert in_use(registry) == 0


async def test_c6_waiter_skipped_by_a_slot_it_cannot_use() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("a", serial="SA"))
    registry.upsert_provider(provider("b", serial="SB"))
    ra = await registry.reserve(Ask("m", allowlist=frozenset({"SA"})))
    rb = await registry.reserve(Ask("m", allowlist=frozenset({"SB"})))
    wants_a = asyncio.create_task(registry.reserve(Ask("m", allowlist=frozenset({"SA"}))))
    await settle()
    wants_b = asyncio.create_task(registry.reserve(Ask("m", allowlist=frozenset({"SB"}))))
    await settle()
    registry.release(rb.id, Outcome(200))
    await settle()
    assert wants_b.done() and not wants_a.done()
    registry.release(ra.id, Outcome(200))
    await settle()
    assert wants_a.result().provider_id == "a"


async def test_c6_queue_timeout_by_the_clock() -> None:
    settings = RegistrySettings(heartbeat_timeout_s=1000, reconnect_grace_s=1000)
    registry, clock = make_registry(settings)
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    clock.advance(119)
    registry.sweep()
    await settle()
    assert not waiter.done()
    clock.advance(1)
    registry.sweep()
    await settle()
    with pytest.raises(QueueTimeout) as info:
        waiter.result()
    assert info.value.http_status == 429 and info.value.retry_after_s == 2
    assert registry.queue_depth("m") == 0
    registry.release(held.id, Outcome(200))
    assert in_use(registry) == 0


async def test_c6_queue_timeout_from_the_call_budget() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    with pytest.raises(QueueTimeout):
        await registry.reserve(Ask("m"), timeout_s=0)
    assert registry.queue_depth("m") == 0
    registry.release(held.id, Outcome(200))
    assert in_use(registry) == 0


async def test_c6_call_budget_caps_the_wait_deadline() -> None:
    registry, clock = make_registry(RegistrySettings(heartbeat_timeout_s=1000))
    registry.upsert_provider(provider("p1"))
    await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m"), timeout_s=30))
    await settle()
    clock.advance(30)
    registry.sweep()
    await settle()
    assert isinstance(waiter.exception(), QueueTimeout)


async def test_c6_cancelled_waiter_leaves_no_trace() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    doomed = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    survivor = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    doomed.cancel()
    await settle()
    assert doomed.cancelled()
    assert registry.queue_depth("m") == 1
    registry.release(held.id, Outcome(200))
    await settle()
    got = survivor.result()
    registry.release(got.id, Outcome(200))
    assert in_use(registry) == 0


async def test_c6_cancel_after_grant_gives_the_slot_back() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    registry.release(held.id, Outcome(200))  # grants the waiter synchronously
    waiter.cancel()  # ...which is cancelled before it could resume
    await settle()
    assert waiter.cancelled()
    assert in_use(registry) == 0
    assert registry.queue_depth("m") == 0


async def test_c6_drain_on_registration() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    clock.advance(7)
    registry.upsert_provider(provider("p2"))
    await settle()
    got = waiter.result()
    assert got.provider_id == "p2" and got.queued_s == 7


async def test_a7_reconnecting_provider_is_waited_for() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    registry.remove_provider("p1")
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    assert registry.queue_depth("m") == 1
    clock.advance(3)
    registry.upsert_provider(provider("p1"))
    await settle()
    assert waiter.result().provider_id == "p1"


async def test_c6_fail_fast_when_the_last_capable_provider_leaves() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    registry.upsert_provider(provider("other", models={"x": model("x")}))
    held = await registry.reserve(Ask("m"))
    waiters = [asyncio.create_task(registry.reserve(Ask("m"))) for _ in range(3)]
    await settle()
    assert registry.remove_provider("p1")
    await settle()
    for w in waiters:
        assert isinstance(w.exception(), NoEligibleProvider)
    assert registry.queue_depth("m") == 0
    registry.release(held.id, Outcome(0))
    assert in_use(registry) == 0


async def test_c6_no_fail_while_another_capable_provider_remains() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    registry.upsert_provider(provider("p2"))
    await registry.reserve(Ask("m"))
    held2 = await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    registry.remove_provider("p1" if held2.provider_id == "p2" else "p2")
    await settle()
    assert not waiter.done()
    registry.release(held2.id, Outcome(200))
    await settle()
    assert waiter.result().provider_id == held2.provider_id


async def test_c6_fail_fast_with_the_capability_error() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    await registry.reserve(Ask("m", TOOLS))
    tools_waiter = asyncio.create_task(registry.reserve(Ask("m", TOOLS)))
    base_waiter = asyncio.create_task(registry.reserve(Ask("m", BASE)))
    await settle()
    # Re-registers with a template that breaks on tools: tools waiters fail, base waits.
    registry.upsert_provider(provider("p1", models={"m": model(cap_tools=False)}))
    await settle()
    assert isinstance(tools_waiter.exception(), NoCapableProvider)
    assert not base_waiter.done()
    base_waiter.cancel()
    await settle()


async def test_c6_losing_trust_fails_waiters_and_regaining_it_drains() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    registry.upsert_provider(provider("p2", models={"m": model(max_concurrency=0)}))
    held = await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    assert registry.set_trusted("p1", False)
    await settle()
    assert not waiter.done()  # p2 is capable, merely full
    assert registry.set_trusted("p2", False)
    await settle()
    assert isinstance(waiter.exception(), NoEligibleProvider)
    assert not registry.set_trusted("ghost", True)
    registry.release(held.id, Outcome(0))
    waiter2 = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    assert isinstance(waiter2.exception(), NoEligibleProvider)  # nobody trusted: no queue
    registry.set_trusted("p1", True)
    await granted(registry, Ask("m"))


async def test_c6_silence_fails_waiters_at_sweep() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    clock.advance(16)
    registry.sweep()
    await settle()
    assert isinstance(waiter.exception(), NoEligibleProvider)
    registry.release(held.id, Outcome(502))
    assert in_use(registry) == 0


# --------------------------------------------------------------------------- breaker feed


async def test_c4_release_feeds_the_breaker_and_reports_the_transition() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=8)}))
    results = []
    for code in (500, 503, 503, 504):
        r = await registry.reserve(Ask("m", TOOLS))
        results.append(registry.release(r.id, Outcome(code)).cooldown_entered)
    assert results == [False, False, False, True]
    assert registry.stats().cooldowns_entered == 1
    (row,) = registry.explain(Ask("m", TOOLS))
    assert [r.code for r in row.reasons] == [ReasonCode.COOLING_DOWN_UNTIL]
    assert [row.eligible for row in registry.explain(Ask("m", BASE))] == [True]  # tools only


async def test_c4_cancel_and_uncounted_codes_are_neutral() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=8)}))
    for code in (0, 0, 501, 505, 507, 503, 400, 0):
        r = await registry.reserve(Ask("m"))
        assert not registry.release(r.id, Outcome(code)).cooldown_entered
    await granted(registry, Ask("m"))


async def test_c4_outcome_shape_overrides_the_reservation_shape() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=8)}))
    for _ in range(2):
        r = await registry.reserve(Ask("m", BASE))
        registry.release(r.id, Outcome(502, shape=Shape.TOOLS))
    assert isinstance(await refused(registry, Ask("m", TOOLS)), NoCapableProvider)
    await granted(registry, Ask("m", BASE))


async def test_c4_success_clears_only_its_shape_through_release() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=8)}))
    for traits in (TOOLS, TOOLS, BASE):
        r = await registry.reserve(Ask("m", traits))
        registry.release(r.id, Outcome(500))
    r = await registry.reserve(Ask("m", Traits(requires_vision=False)))
    registry.release(r.id, Outcome(200))  # base success
    assert isinstance(await refused(registry, Ask("m", TOOLS)), NoCapableProvider)
    r = await registry.reserve(Ask("m", BASE))
    assert not registry.release(r.id, Outcome(500)).cooldown_entered  # base strike was cleared


async def test_c4_reregistration_starts_clean() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=8)}))
    stale = await registry.reserve(Ask("m", TOOLS))
    for _ in range(2):
        r = await registry.reserve(Ask("m", TOOLS))
        registry.release(r.id, Outcome(500))
    assert isinstance(await refused(registry, Ask("m", TOOLS)), NoCapableProvider)
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=8)}))
    await granted(registry, Ask("m", TOOLS))
    # The old session's late failures do not strike the new one.
    r = await registry.reserve(Ask("m", TOOLS))
    registry.release(r.id, Outcome(500))
    assert registry.release(stale.id, Outcome(502)).released
    await granted(registry, Ask("m", TOOLS))
    assert in_use(registry) == 0


async def test_c4_cooldown_expiry_restores_routing() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=8)}))
    for _ in range(2):
        r = await registry.reserve(Ask("m", TOOLS))
        registry.release(r.id, Outcome(500))
    clock.advance(299)
    registry.update_load("p1", {})  # heartbeat
    assert isinstance(await refused(registry, Ask("m", TOOLS)), NoCapableProvider)
    clock.advance(1)
    r = await registry.reserve(Ask("m", TOOLS))
    assert r.provider_id == "p1"


# --------------------------------------------------------------------------- concurrency


async def test_b12_hundred_concurrent_tasks_never_oversubscribe() -> None:
    registry, _ = make_registry(RegistrySettings(queue_max_depth=100))
    limits = {"a": 1, "b": 2, "c": 3}
    for pid, limit in limits.items():
        registry.upsert_provider(provider(pid, models={"m": model(max_concurrency=limit)}))
    holding = dict.fromkeys(limits, 0)
    peak = dict.fromkeys(limits, 0)
    served: list[Reservation] = []

    async def client(i: int) -> None:
        r = await registry.reserve(Ask("m", TOOLS if i % 2 else BASE))
        holding[r.provider_id] += 1
        peak[r.provider_id] = max(peak[r.provider_id], holding[r.provider_id])
        assert holding[r.provider_id] <= limits[r.provider_id]
        for _ in range(i % 4):
            await asyncio.sleep(0)
        holding[r.provider_id] -= 1
        assert registry.release(r.id, Outcome(200 if i % 3 else 0)).released
        served.append(r)

    await asyncio.gather(*(client(i) for i in range(100)))
    assert len(served) == 100 and len({r.id for r in served}) == 100
    assert peak == limits  # every slot got used, none was oversubscribed
    stats = registry.stats()
    assert (stats.slots_in_use, dict(stats.queue_depth)) == (0, {})


async def test_b12_concurrent_cancellations_leave_nothing_behind() -> None:
    registry, _ = make_registry(RegistrySettings(queue_max_depth=100))
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=2)}))

    async def client() -> None:
        r = await registry.reserve(Ask("m"))
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        finally:
            registry.release(r.id, Outcome(0))

    tasks = [asyncio.create_task(client()) for _ in range(100)]
    await settle()
    for task in tasks[::3]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stats = registry.stats()
    assert (stats.slots_in_use, dict(stats.queue_depth)) == (0, {})


# --------------------------------------------------------------------------- table, explain


def test_c7_explain_lists_every_provider_with_every_reason() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("ok", serial="S-OK", models={"m": model(is_vision=True)}))
    registry.upsert_provider(provider("old", version="0.6.1"))
    registry.upsert_provider(provider("broken", models={"m": model(template_render_ok=False)}))
    registry.upsert_provider(provider("shy", trusted=False))
    registry.upsert_provider(provider("elsewhere", models={"x": model("x")}))
    registry.upsert_provider(provider("gone"))
    registry.remove_provider("gone")
    rows = registry.explain(Ask("m", Traits(has_tools=True, requires_vision=True)))
    assert next(r.provider_id for r in rows) == "ok"
    by_id = {r.provider_id: {x.code for x in r.reasons} for r in rows}
    assert by_id == {
        "ok": set(),
        "old": {ReasonCode.BELOW_FLOOR, ReasonCode.NOT_VISION},
        "broken": {ReasonCode.TEMPLATE_BROKEN, ReasonCode.NOT_VISION},
        "shy": {ReasonCode.UNTRUSTED, ReasonCode.NOT_VISION},
        "elsewhere": {ReasonCode.MODEL_NOT_SERVED},
        "gone": {ReasonCode.OFFLINE, ReasonCode.NOT_VISION},
    }
    assert rows[0].eligible and not any(r.eligible for r in rows[1:])
    assert rows[0].serial == "S-OK" and rows[0].version == "0.6.5"
    allowed = registry.explain(Ask("m", BASE, allowlist=frozenset({"S-OK"})))
    assert {r.provider_id for r in allowed if r.eligible} == {"ok"}


async def test_c7_explain_shows_capacity() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    await registry.reserve(Ask("m"))
    (row,) = registry.explain(Ask("m"))
    assert [r.code for r in row.reasons] == [ReasonCode.AT_CAPACITY]


def test_list_models_and_stats_count_only_live_providers() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("a", models={"m": model(), "n": model("n")}))
    registry.upsert_provider(provider("b", trusted=False, models={"secret": model("secret")}))
    registry.upsert_provider(provider("c", models={"gone": model("gone")}))
    registry.remove_provider("c")
    assert registry.list_models() == (["m", "n"], False)
    assert registry.online_provider_ids() == ["a"]
    assert registry.stats().providers_online == 1  # one predicate: online, trusted, fresh
    clock.advance(16)
    assert registry.list_models() == ([], False)  # silent
    assert (registry.online_provider_ids(), registry.stats().providers_online) == ([], 0)


def known_ids(registry: Registry) -> list[str]:
    """Every provider the table holds, in any state (Explain lists them all)."""
    return [row.provider_id for row in registry.explain(Ask("m"))]


async def test_provider_table_lifecycle() -> None:
    registry, clock = make_registry()
    stored = registry.upsert_provider(provider("p1", last_seen=-5.0))
    assert stored.last_seen == clock.now and stored.registration == 1
    assert registry.upsert_provider(provider("p1")).registration == 2
    assert registry.stats().providers_online == 1
    assert not registry.remove_provider("ghost")
    assert registry.remove_provider("p1")
    assert not registry.remove_provider("p1")  # already offline
    assert (known_ids(registry), registry.stats().providers_online) == (["p1"], 0)
    clock.advance(61)
    registry.sweep()
    assert known_ids(registry) == []
    assert isinstance(await refused(registry, Ask("m")), UnknownModel)


async def test_heartbeat_revives_a_silent_provider_and_drains() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    clock.advance(20)
    waiter = asyncio.create_task(registry.reserve(Ask("m")))  # silent = reconnecting: queue
    await settle()
    assert registry.queue_depth("m") == 1
    assert registry.update_load("p1", {"m": ModelLoad(running=0)})
    await settle()
    assert waiter.result().provider_id == "p1"


async def test_heartbeat_does_not_revive_an_offline_provider() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    registry.remove_provider("p1")
    registry.update_load("p1", {})
    (row,) = registry.explain(Ask("m"))
    assert [r.code for r in row.reasons] == [ReasonCode.OFFLINE]
    await stop(await waits(registry, Ask("m")))  # still only reconnecting


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        RegistrySettings(queue_max_depth=-1)
    with pytest.raises(ValueError):
        RegistrySettings(breaker_window_s=0)
    with pytest.raises(ValueError):
        RegistrySettings(retry_after_min_s=10, retry_after_max_s=5)
    with pytest.raises(ValueError):
        RegistrySettings(tools_version_floor=" ")
    with pytest.raises(ValueError):
        RegistrySettings(near_tie_window_s=float("nan"))


def test_traits_shape() -> None:
    assert Traits().shape is Shape.BASE
    assert Traits(requires_vision=True).shape is Shape.VISION
    assert Traits(has_tools=True, requires_vision=True).shape is Shape.TOOLS


def test_clock_is_injected() -> None:
    clock = FakeClock(5.0)
    import random

    registry = Registry(RegistrySettings(), clock=clock, rng=random.Random(0))
    assert registry.upsert_provider(provider("p1")).last_seen == 5.0
    assert replace(provider("p1")).serial == "p1"


async def test_heartbeat_after_a_sweep_still_revives_a_silent_provider() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    clock.advance(16)
    registry.sweep()
    assert registry.stats().providers_online == 0
    await stop(await waits(registry, Ask("m")))  # silent: reconnecting
    registry.update_load("p1", {})
    await granted(registry, Ask("m"))
    assert registry.stats().providers_online == 1


def test_sweep_forgets_providers_silent_past_the_grace() -> None:
    registry, clock = make_registry()
    registry.upsert_provider(provider("p1"))
    clock.advance(60)
    registry.sweep()
    assert known_ids(registry) == ["p1"]
    clock.advance(1)
    registry.sweep()
    assert known_ids(registry) == []
    assert not registry.update_load("p1", {})


async def test_set_trusted_is_idempotent() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", trusted=False))
    assert isinstance(await refused(registry, Ask("m")), NoEligibleProvider)
    assert registry.set_trusted("p1", True)
    assert registry.set_trusted("p1", True)
    await granted(registry, Ask("m"))


async def test_c6_sweep_serves_waiters_once_a_cooldown_lapses() -> None:
    settings = RegistrySettings(queue_wait_s=400)
    registry, clock = make_registry(settings)
    registry.upsert_provider(provider("cool", models={"m": model(max_concurrency=4)}))
    registry.upsert_provider(provider("busy"))
    for _ in range(2):
        r = await registry.reserve(Ask("m", exclude=frozenset({"busy"})))
        registry.release(r.id, Outcome(500))
    held = await registry.reserve(Ask("m"))
    assert held.provider_id == "busy"
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    clock.advance(299)
    for pid in ("cool", "busy"):
        registry.update_load(pid, {})
    registry.sweep()
    await settle()
    assert not waiter.done()
    clock.advance(1)
    registry.sweep()
    await settle()
    assert waiter.result().provider_id == "cool"


async def test_c6_sweep_fails_waiters_of_providers_it_forgets() -> None:
    registry, clock = make_registry(RegistrySettings(heartbeat_timeout_s=100, queue_wait_s=400))
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    waiter = asyncio.create_task(registry.reserve(Ask("m")))
    await settle()
    clock.advance(61)  # past the reconnect grace without a heartbeat
    registry.sweep()
    await settle()
    assert isinstance(waiter.exception(), NoEligibleProvider)
    registry.release(held.id, Outcome(0))
    assert in_use(registry) == 0


async def test_c5_select_previews_without_taking_a_slot() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("fast", decode_tps=500))
    registry.upsert_provider(provider("slow", decode_tps=5))
    chosen = registry.select(Ask("m", TOOLS, max_tokens=100))
    assert chosen is not None and chosen.id == "fast"
    assert in_use(registry) == 0
    assert registry.select(Ask("m", exclude=frozenset({"fast", "slow"}))) is None
    assert registry.select(Ask("nope")) is None
