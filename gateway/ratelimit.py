"""Per-API-key admission: token buckets (issue 8, A11: a steady rate with a burst, refilled by
the clock) and the number of requests in flight (A14)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    rate_per_s: float  # tokens added per second; 0 = unlimited
    burst: float  # bucket size


def parse_limits(spec: str) -> dict[str, Limit]:
    """`key=RATE/BURST,key2=RATE/BURST` (e.g. `team-a=5/10`) -> per-key limits."""
    out: dict[str, Limit] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        key, _, value = item.partition("=")
        rate, _, burst = value.partition("/")
        try:
            limit = Limit(float(rate), float(burst or rate))
        except ValueError as exc:
            raise ValueError(f"bad rate limit {item!r}: use key=RATE/BURST") from exc
        if not key or limit.rate_per_s < 0 or (limit.burst < 1 and limit.rate_per_s > 0):
            raise ValueError(f"bad rate limit {item!r}: use key=RATE/BURST")
        out[key] = limit
    return out


class RateLimiter:
    """`acquire(key)` returns 0 when a request may go, else the seconds until it may."""

    def __init__(
        self, default: Limit, per_key: Mapping[str, Limit], clock: Callable[[], float]
    ) -> None:
        self._default = default
        self._per_key = dict(per_key)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def acquire(self, key: str) -> float:
        limit = self._per_key.get(key, self._default)
        if limit.rate_per_s <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.get(key, (limit.burst, now))
        tokens = min(limit.burst, tokens + (now - at) * limit.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / limit.rate_per_s


def parse_concurrency(spec: str) -> dict[str, int]:
    """`key=N,key2=N` (e.g. `batch-job=4`) -> per-key in-flight limits; 0 = unlimited."""
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        key, _, value = item.partition("=")
        try:
            limit = int(value)
        except ValueError as exc:
            raise ValueError(f"bad concurrency limit {item!r}: use key=N") from exc
        if not key or limit < 0:
            raise ValueError(f"bad concurrency limit {item!r}: use key=N")
        out[key] = limit
    return out


class ConcurrencyLimiter:
    """Requests in flight per API key (A14). `acquire(key)` returns a `Lease`, or None when
    the key already has its limit in flight; the lease's `release()` gives the place back
    (once: a second call is a no-op, so every way out of a request may call it)."""

    def __init__(self, default: int, per_key: Mapping[str, int]) -> None:
        self._default = default
        self._per_key = dict(per_key)
        self._in_flight: dict[str, int] = {}  # only keys with requests in flight

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    def acquire(self, key: str) -> Lease | None:
        limit = self._per_key.get(key, self._default)
        held = self._in_flight.get(key, 0)
        if limit > 0 and held >= limit:
            return None
        self._in_flight[key] = held + 1
        return Lease(self, key)

    def _release(self, key: str) -> None:
        held = self._in_flight[key] - 1
        if held:
            self._in_flight[key] = held
        else:
            del self._in_flight[key]


class Lease:
    """One request's place in its key's concurrency limit."""

    __slots__ = ("_key", "_limiter")

    def __init__(self, limiter: ConcurrencyLimiter, key: str) -> None:
        self._limiter: ConcurrencyLimiter | None = limiter
        self._key = key

    def release(self) -> None:
        if self._limiter is not None:
            self._limiter._release(self._key)
            self._limiter = None
