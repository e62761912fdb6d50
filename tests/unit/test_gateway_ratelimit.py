"""Per-key admission: token buckets (issue 8, A11) and requests in flight (A14)."""

from __future__ import annotations

import pytest

from gateway.ratelimit import (
    ConcurrencyLimiter,
    Limit,
    RateLimiter,
    parse_concurrency,
    parse_limits,
)
from tests.fakes.clock import FakeClock


def test_a11_unlimited_by_default() -> None:
    limiter = RateLimiter(Limit(0, 1), {}, FakeClock(100.0))
    assert all(limiter.acquire("k") == 0 for _ in range(1000))


def test_a11_burst_then_steady_rate_with_retry_after() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(Limit(2.0, 3), {}, clock)
    assert [limiter.acquire("k") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("k") == 0
    assert limiter.acquire("k") == pytest.approx(0.5)


def test_a11_keys_have_their_own_buckets_and_overrides() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(Limit(1.0, 1), parse_limits("vip=100/100, free=0.5/1"), clock)
    assert limiter.acquire("a") == 0 and limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0
    assert all(limiter.acquire("vip") == 0 for _ in range(100))
    assert limiter.acquire("free") == 0 and limiter.acquire("free") == pytest.approx(2.0)


def test_a11_refill_is_capped_at_burst() -> None:
    clock = FakeClock(100.0)
    limiter = RateLimiter(Limit(1.0, 2), {}, clock)
    clock.now += 3600
    assert [limiter.acquire("k") == 0 for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("spec", ["k", "k=x/1", "=1/1", "k=-1/1", "k=1/0"])
def test_a11_bad_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_limits(spec)


def test_a11_spec_parsing() -> None:
    assert parse_limits("") == {}
    assert parse_limits("a=5/10,b=2") == {"a": Limit(5.0, 10.0), "b": Limit(2.0, 2.0)}


def test_a14_a_key_has_at_most_its_limit_in_flight_and_others_are_not_affected() -> None:
    limiter = ConcurrencyLimiter(2, {})
    first, second = limiter.acquire("a"), limiter.acquire("a")
    assert first is not None and second is not None
    assert limiter.acquire("a") is None
    assert limiter.acquire("b") is not None
    first.release()
    assert limiter.acquire("a") is not None


def test_a14_a_lease_is_given_back_once_however_often_it_is_released() -> None:
    limiter = ConcurrencyLimiter(1, {})
    lease = limiter.acquire("a")
    assert lease is not None
    lease.release()
    lease.release()  # a second way out of the same request
    assert limiter.in_flight("a") == 0
    again = limiter.acquire("a")
    assert again is not None and limiter.acquire("a") is None


def test_a14_per_key_overrides_and_zero_means_unlimited() -> None:
    limiter = ConcurrencyLimiter(1, parse_concurrency("batch=3, admin=0"))
    assert [limiter.acquire("batch") is not None for _ in range(4)] == [True] * 3 + [False]
    assert all(limiter.acquire("admin") is not None for _ in range(500))
    assert limiter.acquire("other") is not None and limiter.acquire("other") is None
    assert all(ConcurrencyLimiter(0, {}).acquire("k") is not None for _ in range(500))


def test_a14_idle_keys_hold_no_memory() -> None:
    limiter = ConcurrencyLimiter(4, {})
    leases = [limiter.acquire(f"k{i}") for i in range(100)]
    for lease in leases:
        assert lease is not None
        lease.release()
    assert limiter._in_flight == {}


@pytest.mark.parametrize("spec", ["k", "k=x", "=1", "k=-1", "k=1.5"])
def test_a14_bad_concurrency_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_concurrency(spec)


def test_a14_concurrency_spec_parsing() -> None:
    assert parse_concurrency("") == {}
    assert parse_concurrency("a=5,b=0") == {"a": 5, "b": 0}
