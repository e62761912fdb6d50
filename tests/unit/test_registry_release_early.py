"""B12 across a cancelled Reserve: the caller names the reservation, so it can release it
even when the reply carrying it was lost; an id released first is never granted."""

from __future__ import annotations

import asyncio

import pytest

from registry_svc.errors import QueueTimeout
from registry_svc.model import Ask, Outcome, RegistrySettings
from tests.fakes.registry import make_registry, model, provider


async def test_b12_caller_chosen_id_names_the_reservation() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1"))
    r = await registry.reserve(Ask("m", reservation_id="req-1.1.abc"))
    assert r.id == "req-1.1.abc"
    assert registry.stats().slots_in_use == 1
    assert registry.release("req-1.1.abc", Outcome(0)).released
    assert registry.stats().slots_in_use == 0


async def test_b12_an_id_released_before_its_grant_is_never_granted() -> None:
    registry, _ = make_registry(RegistrySettings(queue_wait_s=0.2))
    registry.upsert_provider(provider("p1"))
    held = await registry.reserve(Ask("m"))
    # The caller gave up on this reservation before the registry granted it.
    assert not registry.release("late-id", Outcome(0)).released
    waiter = asyncio.ensure_future(registry.reserve(Ask("m", reservation_id="late-id")))
    await asyncio.sleep(0)
    registry.release(held.id, Outcome(200))  # frees the slot: would serve the waiter
    assert registry.stats().slots_in_use == 0, "the released id must not take the slot"
    with pytest.raises(QueueTimeout):
        await waiter
    other = await registry.reserve(Ask("m", reservation_id="fresh-id"))
    assert other.id == "fresh-id"


async def test_b12_a_reused_id_falls_back_to_a_fresh_one() -> None:
    registry, _ = make_registry()
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=2)}))
    a = await registry.reserve(Ask("m", reservation_id="same"))
    b = await registry.reserve(Ask("m", reservation_id="same"))
    assert a.id == "same" and b.id != "same"
    assert (
        registry.release(a.id, Outcome(0)).released and registry.release(b.id, Outcome(0)).released
    )


def test_b12_released_early_memory_is_bounded_and_swept() -> None:
    """Ids released before their grant are remembered (never granted) only so many and only
    so long: past the bound the oldest are forgotten, past the ttl a sweep forgets all."""
    registry, clock = make_registry(RegistrySettings(released_early_max=10, released_early_ttl_s=5))
    registry.upsert_provider(provider("p1", models={"m": model(max_concurrency=100)}))
    for i in range(50):
        registry.release(f"gone-{i}", Outcome(0))

    def grantable(rid: str) -> bool:
        granted = registry.reserve_now(Ask("m", reservation_id=rid))
        if granted is None:
            return False
        assert registry.release(granted.id, Outcome(0)).released
        return True

    assert [grantable(f"gone-{i}") for i in (0, 39, 40, 49)] == [True, True, False, False]
    clock.advance(6)
    registry.sweep()
    assert grantable("gone-40") and grantable("gone-49")
