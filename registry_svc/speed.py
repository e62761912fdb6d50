"""Measured speed per (provider, model) (rule C5): what the dispatcher saw each attempt do,
in place of what the provider advertises about itself.

Every released attempt may bring a ``SpeedSample``: its time to first content, or that it
had none within its time (a slow sample: it stalled, or lost the race after the race point),
and the decode rate after the first content. ``SpeedBook`` folds them into a moving
estimate per (provider, model) -- an exponentially weighted mean, so memory is constant per
key -- and the cost reads it once a key has ``min_samples`` samples of a kind: measured
first-content time is added to the cost, measured decode rate replaces the advertised one.

A slow sample is a lower bound (the first content would have come later, if at all), so it
never lowers an estimate. A provider that was slow ``min_samples`` times has its advertised
rate treated as unproven until it has shown ``min_samples`` decode rates: it is costed at
``unproven_tps`` (a silent provider never completes, so its advertised rate, however high,
is all it would otherwise be judged by).

Keys are bounded in number (least recently measured evicted) and in age (an estimate with no
sample for ``ttl_s`` is forgotten, so a provider judged slow is judged again, now and then,
instead of never). A provider that registers again starts clean
(``clear_provider``), as its breaker does (C4).

Pure and synchronous; time is the caller's monotonic clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from registry_svc.model import RegistrySettings, SpeedSample

__all__ = ["Estimate", "SpeedBook", "SpeedSample"]


@dataclass(slots=True)
class Estimate:
    """The moving estimate of one (provider, model), and what the cost reads from it."""

    seen_at: float
    ttft_s: float = 0.0
    ttft_n: int = 0
    slow_n: int = 0
    decode_tps: float = 0.0
    decode_n: int = 0
    ttft_cost_s: float = 0.0
    """Seconds the cost adds for first content: the estimate once it has enough samples,
    else 0 (the advertised figures alone decide)."""
    decode_s: float = 0.0
    """Seconds per decoded token, measured, once there are enough samples (or unproven:
    ``1 / unproven_tps``); 0 = not yet (the advertised rate is used)."""


_EMPTY: Mapping[str, Estimate] = MappingProxyType({})


class SpeedBook:
    """Moving speed estimates per (provider, model); see the module docstring."""

    def __init__(
        self,
        *,
        min_samples: int = 3,
        weight: float = 0.25,
        ttl_s: float = 600.0,
        max_entries: int = 100_000,
        unproven_tps: float = 1.0,
    ) -> None:
        if min_samples < 1 or not 0 < weight <= 1 or not ttl_s > 0 or max_entries < 1:
            raise ValueError("min_samples >= 1, 0 < weight <= 1, ttl_s > 0, max_entries >= 1")
        if not unproven_tps > 0:
            raise ValueError("unproven_tps must be > 0")
        self._unproven_s = 1.0 / unproven_tps
        self._min = min_samples
        self._weight = weight
        self._ttl = ttl_s
        self._max = max_entries
        # Grouped by model, so Reserve reads one small map per request (the cost's hot path).
        self._by_model: dict[str, dict[str, Estimate]] = {}
        # (model, provider) in order of their last sample: oldest first, for eviction and age.
        self._order: dict[tuple[str, str], None] = {}

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> SpeedBook:
        return cls(
            min_samples=settings.speed_min_samples,
            weight=settings.speed_weight,
            ttl_s=settings.speed_ttl_s,
            max_entries=settings.speed_max_entries,
            unproven_tps=settings.unknown_tps,
        )

    def __len__(self) -> int:
        """Number of (provider, model) estimates held."""
        return len(self._order)

    def record(self, provider_id: str, model_id: str, sample: SpeedSample, now: float) -> None:
        """Fold one attempt's sample in. Non-finite or negative values are ignored."""
        ttft = sample.ttft_s
        has_ttft = ttft is not None and math.isfinite(ttft) and ttft >= 0
        tps = sample.decode_tps
        has_decode = math.isfinite(tps) and tps > 0
        if not (has_ttft or has_decode):
            return
        per_model = self._by_model.setdefault(model_id, {})
        estimate = per_model.get(provider_id)
        key = (model_id, provider_id)
        if estimate is None:
            estimate = per_model[provider_id] = Estimate(seen_at=now)
        else:
            del self._order[key]  # re-inserted below: newest last
        self._order[key] = None
        estimate.seen_at = now
        if has_ttft:
            assert ttft is not None
            estimate.ttft_s = self._fold(estimate.ttft_s, estimate.ttft_n, ttft, sample.no_content)
            estimate.ttft_n += 1
            estimate.slow_n += sample.no_content
            if estimate.ttft_n >= self._min:
                estimate.ttft_cost_s = estimate.ttft_s
        if has_decode:
            estimate.decode_tps = self._fold(estimate.decode_tps, estimate.decode_n, tps, False)
            estimate.decode_n += 1
        if estimate.decode_n >= self._min:
            estimate.decode_s = 1.0 / estimate.decode_tps
        elif estimate.slow_n >= self._min:
            estimate.decode_s = self._unproven_s  # slow, and its rate not shown yet
        if len(self._order) > self._max:
            self._drop(*next(iter(self._order)))

    def for_model(self, model_id: str) -> Mapping[str, Estimate]:
        """Provider id -> estimate for ``model_id`` (read-only use; the hot path)."""
        return self._by_model.get(model_id, _EMPTY)

    def get(self, provider_id: str, model_id: str) -> Estimate | None:
        return self._by_model.get(model_id, _EMPTY).get(provider_id)

    def clear_provider(self, provider_id: str) -> None:
        """Forget every estimate of ``provider_id`` (it registered again: it starts clean)."""
        for model_id in [m for m, per in self._by_model.items() if provider_id in per]:
            self._drop(model_id, provider_id)

    def sweep(self, now: float) -> int:
        """Forget estimates with no sample for ``ttl_s``; return how many."""
        horizon = now - self._ttl
        stale: list[tuple[str, str]] = []
        for model_id, provider_id in self._order:
            if self._by_model[model_id][provider_id].seen_at >= horizon:
                break  # the order is the order of the last sample
            stale.append((model_id, provider_id))
        for model_id, provider_id in stale:
            self._drop(model_id, provider_id)
        return len(stale)

    def _fold(self, mean: float, n: int, x: float, lower_bound: bool) -> float:
        if n == 0:
            return x
        folded = mean + self._weight * (x - mean)
        # A lower bound below the estimate agrees with it: it must not pull it down.
        return max(folded, mean) if lower_bound else folded

    def _drop(self, model_id: str, provider_id: str) -> None:
        self._order.pop((model_id, provider_id), None)
        per_model = self._by_model.get(model_id)
        if per_model is not None:
            per_model.pop(provider_id, None)
            if not per_model:
                del self._by_model[model_id]
