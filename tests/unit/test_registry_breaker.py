"""C4: the (provider, model, shape) error breaker."""

from __future__ import annotations

import pytest

from registry_svc.breaker import Breaker
from registry_svc.model import RegistrySettings, Shape

T0 = 1000.0


def feed(breaker: Breaker, codes: list[int], *, at: float = T0, step: float = 1.0) -> list[bool]:
    return [
        breaker.record("p1", "m", Shape.TOOLS, code, at + i * step) for i, code in enumerate(codes)
    ]


def test_c4_uncounted_codes_never_trip() -> None:
    breaker = Breaker()
    assert feed(breaker, [501, 505, 507]) == [False, False, False]
    assert feed(breaker, [503, 400, 413, 422, 429, 0]) == [False] * 6
    assert breaker.cooling_until("p1", "m", Shape.TOOLS, T0 + 10) is None
    assert len(breaker) == 0


def test_c4_trips_on_the_second_counted_code() -> None:
    breaker = Breaker()
    assert feed(breaker, [500, 503, 503, 504]) == [False, False, False, True]
    assert breaker.cooling_until("p1", "m", Shape.TOOLS, T0 + 3) == T0 + 3 + 300
    assert breaker.cooldowns_entered == 1


@pytest.mark.parametrize("codes", [[500, 500], [502, 502], [504, 504], [500, 502], [502, 504]])
def test_c4_each_counted_code_is_a_strike(codes: list[int]) -> None:
    assert feed(Breaker(), codes) == [False, True]


def test_c4_window_is_sliding() -> None:
    breaker = Breaker()
    assert not breaker.record("p1", "m", Shape.BASE, 500, T0)
    assert not breaker.record("p1", "m", Shape.BASE, 500, T0 + 60.5)  # first strike expired
    assert breaker.record("p1", "m", Shape.BASE, 500, T0 + 100)  # 39.5 s after the second


def test_c4_window_edge_is_inclusive() -> None:
    breaker = Breaker()
    breaker.record("p1", "m", Shape.BASE, 500, T0)
    assert breaker.record("p1", "m", Shape.BASE, 500, T0 + 60)


def test_c4_cooldown_expires() -> None:
    breaker = Breaker()
    feed(breaker, [500, 500])
    until = T0 + 1 + 300
    assert breaker.cooling_until("p1", "m", Shape.TOOLS, until - 0.001) == until
    assert breaker.cooling_until("p1", "m", Shape.TOOLS, until) is None


def test_c4_more_strikes_rearm_without_reporting_again() -> None:
    breaker = Breaker()
    feed(breaker, [500, 500])
    assert not breaker.record("p1", "m", Shape.TOOLS, 502, T0 + 50)
    assert breaker.cooling_until("p1", "m", Shape.TOOLS, T0 + 302) == T0 + 50 + 300
    assert breaker.cooldowns_entered == 1


def test_c4_after_expiry_a_fresh_pair_reenters_and_is_reported() -> None:
    breaker = Breaker()
    feed(breaker, [500, 500])
    later = T0 + 1000
    assert not breaker.record("p1", "m", Shape.TOOLS, 500, later)
    assert breaker.record("p1", "m", Shape.TOOLS, 500, later + 1)
    assert breaker.cooldowns_entered == 2


def test_c4_scoped_to_the_triple() -> None:
    breaker = Breaker()
    breaker.record("p1", "m", Shape.TOOLS, 500, T0)
    # Strikes on other providers, models or shapes do not add up.
    assert not breaker.record("p2", "m", Shape.TOOLS, 500, T0 + 1)
    assert not breaker.record("p1", "m2", Shape.TOOLS, 500, T0 + 2)
    assert not breaker.record("p1", "m", Shape.BASE, 500, T0 + 3)
    assert not breaker.record("p1", "m", Shape.VISION, 500, T0 + 4)
    assert breaker.record("p1", "m", Shape.TOOLS, 500, T0 + 5)
    for pid, mid, shape in [("p2", "m", Shape.TOOLS), ("p1", "m2", Shape.TOOLS)]:
        assert breaker.cooling_until(pid, mid, shape, T0 + 6) is None
    assert breaker.cooling_until("p1", "m", Shape.BASE, T0 + 6) is None
    assert breaker.cooling(model_id="m", shape=Shape.TOOLS, now=T0 + 6) == {"p1": T0 + 305}
    assert breaker.cooling(model_id="m", shape=Shape.BASE, now=T0 + 6) == {}


def test_c4_success_clears_only_its_own_shape() -> None:
    breaker = Breaker()
    for shape in (Shape.TOOLS, Shape.BASE):
        breaker.record("p1", "m", shape, 500, T0)
        breaker.record("p1", "m", shape, 500, T0 + 1)
    breaker.record("p1", "m", Shape.VISION, 500, T0 + 2)  # one strike
    assert not breaker.record("p1", "m", Shape.BASE, 200, T0 + 3)
    assert breaker.cooling_until("p1", "m", Shape.BASE, T0 + 4) is None
    assert breaker.cooling_until("p1", "m", Shape.TOOLS, T0 + 4) == T0 + 301
    # The vision strike survives a base success: one more trips it.
    assert breaker.record("p1", "m", Shape.VISION, 500, T0 + 5)


def test_c4_success_resets_strikes() -> None:
    breaker = Breaker()
    breaker.record("p1", "m", Shape.BASE, 500, T0)
    breaker.record("p1", "m", Shape.BASE, 200, T0 + 1)
    assert not breaker.record("p1", "m", Shape.BASE, 500, T0 + 2)


def test_c4_clear_provider_forgets_strikes_and_cooldowns() -> None:
    breaker = Breaker()
    feed(breaker, [500, 500])
    breaker.record("p1", "m2", Shape.BASE, 500, T0)
    breaker.record("p2", "m", Shape.TOOLS, 500, T0)
    breaker.clear_provider("p1")
    assert breaker.cooling_until("p1", "m", Shape.TOOLS, T0 + 2) is None
    assert not breaker.record("p1", "m2", Shape.BASE, 500, T0 + 3)  # strike was forgotten
    assert breaker.record("p2", "m", Shape.TOOLS, 500, T0 + 3)  # others untouched
    breaker.clear_provider("nobody")


def test_c4_memory_bounded_with_100k_distinct_keys() -> None:
    breaker = Breaker()
    shapes = list(Shape)
    for i in range(100_000):
        breaker.record(f"p{i % 1000}", f"m{i // 1000}", shapes[i % 3], 500, T0 + i * 1e-4)
    assert len(breaker) == 100_000
    # Once the window has passed, the next strike sweeps every stale entry.
    breaker.record("fresh", "m", Shape.BASE, 500, T0 + 100)
    assert len(breaker) == 1


def test_c4_memory_bounded_for_cooled_keys_after_cooldown() -> None:
    breaker = Breaker()
    for i in range(100_000):
        key = f"p{i}"
        breaker.record(key, "m", Shape.BASE, 500, T0)
        breaker.record(key, "m", Shape.BASE, 500, T0 + 1)
    assert len(breaker.cooling("m", Shape.BASE, T0 + 2)) == 100_000
    assert breaker.record("x", "m", Shape.BASE, 500, T0 + 120) is False
    assert len(breaker) == 100_001  # still cooling: kept
    assert breaker.sweep(T0 + 302) == 100_001
    assert len(breaker) == 0


def test_c4_sweep_keeps_live_entries() -> None:
    breaker = Breaker()
    breaker.record("p1", "m", Shape.BASE, 500, T0)
    breaker.record("p2", "m", Shape.BASE, 500, T0 + 50)
    assert breaker.sweep(T0 + 70) == 1
    assert breaker.record("p2", "m", Shape.BASE, 500, T0 + 80)


def test_c4_settings_drive_the_breaker() -> None:
    settings = RegistrySettings(
        breaker_threshold=3,
        breaker_window_s=10,
        breaker_cooldown_s=5,
        breaker_counted_codes=frozenset({503}),
    )
    breaker = Breaker.from_settings(settings)
    assert feed(breaker, [500, 503, 503, 503]) == [False, False, False, True]
    assert breaker.cooling_until("p1", "m", Shape.TOOLS, T0 + 3) == T0 + 8


def test_c4_rejects_nonsense_parameters() -> None:
    with pytest.raises(ValueError):
        Breaker(threshold=0)
    with pytest.raises(ValueError):
        Breaker(window_s=0)
