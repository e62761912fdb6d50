"""Per-key token buckets (issue 8)."""

from __future__ import annotations

import pytest

from gateway.ratelimit import Limit, RateLimiter, parse_limits
from tests.fakes.clock import FakeClock


def test_unlimited_by_default() -> None:
    limiter = RateLimiter(Limit(0, 1), {}, FakeClock(100.0))
    assert all(limiter.acquire("k") == 0 for _ in range(1000))


def test_burst_then_steady_rate_with_retry_after() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(Limit(2.0, 3), {}, clock)
    assert [limiter.acquire("k") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("k") == 0
    assert limiter.acquire("k") == pytest.approx(0.5)


def test_keys_have_their_own_buckets_and_overrides() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(Limit(1.0, 1), parse_limits("vip=100/100, free=0.5/1"), clock)
    assert limiter.acquire("a") == 0 and limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0
    assert all(limiter.acquire("vip") == 0 for _ in range(100))
    assert limiter.acquire("free") == 0 and limiter.acquire("free") == pytest.approx(2.0)


def test_refill_is_capped_at_burst() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(Limit(1.0, 2), {}, clock)
    clock.now += 3600
    assert [limiter.acquire("k") == 0 for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("spec", ["k", "k=x/1", "=1/1", "k=-1/1", "k=1/0"])
def test_bad_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_limits(spec)


def test_spec_parsing() -> None:
    assert parse_limits("") == {}
    assert parse_limits("a=5/10,b=2") == {"a": Limit(5.0, 10.0), "b": Limit(2.0, 2.0)}
