"""The admissions metric counts every request's first Reserve (its admission) by the A6/A7
rung it reached; retries (may_queue=False) are not admissions."""

from __future__ import annotations

import pytest

from registry_svc.errors import NoCapableProvider, ProvidersBusy, UnknownModel
from registry_svc.model import Ask, Outcome, Traits
from tests.fakes.registry import make_registry, provider


async def test_a7_first_reserves_count_by_verdict() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("old", version="0.6.0"))
    ok = await registry.reserve(Ask("m"))
    registry.release(ok.id, Outcome(200))
    with pytest.raises(UnknownModel):
        await registry.reserve(Ask("nope"))
    with pytest.raises(NoCapableProvider):
        await registry.reserve(Ask("m", Traits(has_tools=True)))
    held = await registry.reserve(Ask("m"))
    with pytest.raises(ProvidersBusy):
        await registry.reserve(Ask("m", may_queue=False))  # a retry: not an admission
    registry.release(held.id, Outcome(0))
    assert registry.stats().admissions == {
        "ok": 2,
        "unknown_model": 1,
        "no_capable_provider": 1,
    }


async def test_e1_heartbeat_limit_change_takes_effect_and_serves_the_queue() -> None:
    """A provider that raises a model's concurrency in a heartbeat gets the extra slot at
    once: a queued request is served without waiting for a release."""
    import asyncio

    from registry_svc.model import ModelLoad

    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))  # max_concurrency 1
    held = await registry.reserve(Ask("m"))
    waiter = asyncio.ensure_future(registry.reserve(Ask("m")))
    await asyncio.sleep(0)
    assert registry.queue_depth("m") == 1
    registry.update_load("p1", {"m": ModelLoad(running=1)}, {"m": 2})
    second = await asyncio.wait_for(waiter, 1)
    assert second.provider_id == "p1" and registry.stats().slots_in_use == 2
    registry.update_load("p1", {"m": ModelLoad(running=2)}, {"m": 0, "other": 5})  # ignored
    for r in (held, second):
        registry.release(r.id, Outcome(200))
    assert registry.stats().slots_in_use == 0


def test_c5_reserve_now_grants_a_free_slot_and_changes_nothing_otherwise() -> None:
    """The Slots stream answers most reserves without a coroutine: `reserve_now` is
    `reserve` when a slot is free (counted as an admission), and a no-op when not."""
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    granted = registry.reserve_now(Ask("m", reservation_id="r1"))
    assert granted is not None and (granted.id, granted.provider_id) == ("r1", "p1")
    assert registry.stats().slots_in_use == 1
    before = registry.stats()
    assert registry.reserve_now(Ask("m", reservation_id="r2")) is None  # full: nothing taken
    assert registry.reserve_now(Ask("nope")) is None  # unknown: `reserve` refuses it
    after = registry.stats()
    assert (after.slots_in_use, after.queue_depth, after.admissions) == (
        before.slots_in_use,
        before.queue_depth,
        before.admissions,
    )
    assert after.admissions == {"ok": 1}
    registry.release("r1", Outcome(200))
    registry.release("r3", Outcome(0))  # released before it was asked: never granted
    assert registry.reserve_now(Ask("m", reservation_id="r3")) is None
    retry = registry.reserve_now(Ask("m", may_queue=False))  # a retry is not an admission
    assert retry is not None and registry.stats().admissions == {"ok": 1}
