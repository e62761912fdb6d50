"""Shape-keyed error breaker (rule C4).

Keyed by (provider, model, shape). Only the counted status codes (500, 502, 504 by
default; never 503 or 4xx) are strikes. ``threshold`` strikes within ``window_s`` put the
key in cooldown for ``cooldown_s``; further strikes while cooling re-arm the cooldown
without being reported again. A success clears only its own key; ``clear_provider`` wipes a
provider that registered again. Entries with no live strike and no live cooldown are swept
at most once per window as strikes arrive (and by ``sweep``), so memory stays proportional
to the keys that failed recently.

Not thread-safe; single event loop use. Time is the caller's monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registry_svc.model import Outcome, RegistrySettings, Shape

_Key = tuple[str, Shape]  # (model, shape); providers hang under it


@dataclass(slots=True)
class _Entry:
    strikes: list[float] = field(default_factory=list)  # newest last, at most `threshold`
    cooling_until: float = float("-inf")


class Breaker:
    """Per (provider, model, shape) strike counter and cooldown clock."""

    def __init__(
        self,
        *,
        counted_codes: frozenset[int] = frozenset({500, 502, 504}),
        threshold: int = 2,
        window_s: float = 60.0,
        cooldown_s: float = 300.0,
    ) -> None:
        if threshold < 1 or window_s <= 0 or cooldown_s <= 0:
            raise ValueError("threshold >= 1, window_s > 0 and cooldown_s > 0 are required")
        self._counted = counted_codes
        self._threshold = threshold
        self._window = window_s
        self._cooldown = cooldown_s
        # Grouped by (model, shape) so Reserve reads one small map per request.
        self._by_key: dict[_Key, dict[str, _Entry]] = {}
        self._size = 0
        self._next_sweep = float("-inf")
        self.cooldowns_entered = 0
        """Total cooldown transitions reported so far (metric ``cooldown_entered``)."""

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> Breaker:
        return cls(
            counted_codes=settings.breaker_counted_codes,
            threshold=settings.breaker_threshold,
            window_s=settings.breaker_window_s,
            cooldown_s=settings.breaker_cooldown_s,
        )

    def __len__(self) -> int:
        """Number of (provider, model, shape) entries held."""
        return self._size

    def record(
        self, provider_id: str, model_id: str, shape: Shape, status_code: int, now: float
    ) -> bool:
        """Feed one outcome; return True only when this call *entered* a cooldown.

        200 clears the key (strikes and cooldown); a counted code is a strike; anything else
        (cancelled, 503, 4xx, other 5xx) changes nothing.
        """
        if status_code == Outcome.SUCCESS:
            self._forget((model_id, shape), provider_id)
            return False
        if status_code not in self._counted:
            return False
        if now >= self._next_sweep:
            self.sweep(now)
        per_provider = self._by_key.setdefault((model_id, shape), {})
        entry = per_provider.get(provider_id)
        if entry is None:
            entry = per_provider[provider_id] = _Entry()
            self._size += 1
        horizon = now - self._window
        strikes = [t for t in entry.strikes if t >= horizon]
        strikes.append(now)
        entry.strikes = strikes[-self._threshold :]
        if len(entry.strikes) < self._threshold:
            return False
        was_cooling = entry.cooling_until > now
        entry.cooling_until = now + self._cooldown
        if was_cooling:
            return False
        self.cooldowns_entered += 1
        return True

    def cooling_until(
        self, provider_id: str, model_id: str, shape: Shape, now: float
    ) -> float | None:
        """The monotonic time the key's cooldown ends, or None if it is not cooling."""
        per_provider = self._by_key.get((model_id, shape))
        if per_provider is None:
            return None
        entry = per_provider.get(provider_id)
        if entry is None or entry.cooling_until <= now:
            return None
        return entry.cooling_until

    def cooling(self, model_id: str, shape: Shape, now: float) -> dict[str, float]:
        """Provider id -> cooldown end, for every provider cooling for (model, shape)."""
        per_provider = self._by_key.get((model_id, shape))
        if not per_provider:
            return {}
        return {
            provider_id: entry.cooling_until
            for provider_id, entry in per_provider.items()
            if entry.cooling_until > now
        }

    def clear_provider(self, provider_id: str) -> None:
        """Forget every strike and cooldown of ``provider_id`` (it registered again)."""
        for key in list(self._by_key):
            self._forget(key, provider_id)

    def sweep(self, now: float) -> int:
        """Drop entries with no strike inside the window and no live cooldown; return count."""
        horizon = now - self._window
        dropped = 0
        for key in list(self._by_key):
            per_provider = self._by_key[key]
            stale = [
                provider_id
                for provider_id, entry in per_provider.items()
                if entry.cooling_until <= now and (not entry.strikes or entry.strikes[-1] < horizon)
            ]
            for provider_id in stale:
                del per_provider[provider_id]
            dropped += len(stale)
            if not per_provider:
                del self._by_key[key]
        self._size -= dropped
        self._next_sweep = now + self._window
        return dropped

    def _forget(self, key: _Key, provider_id: str) -> None:
        per_provider = self._by_key.get(key)
        if per_provider is not None and per_provider.pop(provider_id, None) is not None:
            self._size -= 1
            if not per_provider:
                del self._by_key[key]
