"""What the driver measures of each attempt, and which `Accepted` it believes (B6, C5).

Providers report their own speed and load; some lie. The dispatcher sees what they do:
`AttemptClock` holds one attempt's times, `measure` turns them into the `Speed` its Release
carries to the registry (which keeps a moving estimate per provider and model and prefers it
to the advertised figures), and `ColdLoads` remembers, per provider session and model,
whether a cold load is still plausible, so an `Accepted` is believed once and never after the
provider has served that model.

Pure: times come from the caller's clock.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Final

from dispatcher_svc.dispatch.actions import SUCCESS, Release
from dispatcher_svc.registry_client import Speed

__all__ = ["MIN_DECODE_S", "TOKENS_PER_CHUNK_MAX", "AttemptClock", "ColdLoads", "measure"]

# A decode sample spans at least this long: shorter streams say more about timer and network
# jitter than about the provider's rate.
MIN_DECODE_S: Final = 0.05
# Usage that claims more tokens per content chunk than this is not believed: the chunks are
# counted instead (a provider could claim any number to look fast).
TOKENS_PER_CHUNK_MAX: Final = 16


@dataclass(slots=True)
class AttemptClock:
    """One attempt's times, as the driver saw them (0.0: not yet)."""

    sent_at: float = 0.0
    first_content_at: float = 0.0
    completed_at: float = 0.0
    content_chunks: int = 0  # from the first content on
    completion_tokens: int = 0  # as the provider's usage says
    cold: bool = False  # a believed Accepted: its first-content time is a cold load's


def measure(times: AttemptClock, release: Release, ttft_deadline_s: float) -> Speed | None:
    """What `release` tells the registry about the provider's speed (C5), or None.

    First content seen: its time since the send, unless the attempt was a believed cold load
    (a load is not the provider's speed). None seen but the machine judged the attempt slow
    (`Release.slow`: its timer fired, or it was overtaken after the race point): a slow
    sample valued at the request's first-content deadline, the time it was owed. Completed
    with content over at least `MIN_DECODE_S`: the decode rate after the first content, in
    tokens (usage, capped at `TOKENS_PER_CHUNK_MAX` per chunk; else the chunks) per second.
    """
    ttft: float | None = None
    no_content = False
    if times.first_content_at:
        if not times.cold:
            ttft = max(0.0, times.first_content_at - times.sent_at)
    elif release.slow:
        ttft, no_content = ttft_deadline_s, True
    decode_tps = 0.0
    if release.status_code == SUCCESS and times.first_content_at and times.completed_at:
        span = times.completed_at - times.first_content_at
        chunks = times.content_chunks
        claimed = times.completion_tokens
        tokens = claimed if 0 < claimed <= TOKENS_PER_CHUNK_MAX * chunks else chunks
        if span >= MIN_DECODE_S and tokens >= 2:
            decode_tps = (tokens - 1) / span  # the first token came with the first content
    if ttft is None and not decode_tps:
        return None
    return Speed(ttft_s=ttft, no_content=no_content, decode_tps=decode_tps)


_SERVED: Final = float("-inf")


class ColdLoads:
    """B6: which `Accepted` is plausible. One cold load per (provider session, model): the
    first Accepted opens it with a budget of `budget_s`; an Accepted while it is open is the
    same load; once the provider has delivered content for that model on that session, or
    the budget has run out, Accepted is a lie. A new session (the provider reconnected: its
    models may be unloaded) starts afresh; a session's memory goes with it (weakly held).
    """

    def __init__(self, budget_s: float) -> None:
        self._budget_s = budget_s
        # session -> model -> the end of its cold load's budget, or _SERVED.
        self._by_session: weakref.WeakKeyDictionary[object, dict[str, float]] = (
            weakref.WeakKeyDictionary()
        )

    def accepted(self, session: object, model: str, now: float) -> bool:
        """The session's provider says it is loading `model`: is that plausible now?"""
        per_model = self._by_session.setdefault(session, {})
        until = per_model.get(model)
        if until is None:
            per_model[model] = now + self._budget_s
            return True
        return now < until

    def served(self, session: object, model: str) -> None:
        """The session's provider delivered content for `model`: it is loaded."""
        self._by_session.setdefault(session, {})[model] = _SERVED
