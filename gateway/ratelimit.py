"""Per-API-key token buckets (issue 8): a steady rate with a burst, refilled by the clock."""

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
