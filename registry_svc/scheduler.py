"""Cost-based provider selection (rule C5) with a soft ``avoid_version`` (B10).

Cost is an estimate, in seconds, of when a request would finish on a provider:

    state penalty + queue depth x 3 s + pending x 0.75 s
      + backlog tokens / effective decode tps + prompt / prefill tps
      + max_tokens / effective decode tps

with effective decode tps = observed, else advertised / (1 + 0.27 x running). ``pick``
takes the cheapest and, among candidates within the near-tie window of it, picks at random
so equal providers share load. Eligibility (exclude list, allowlist, gates) is decided
before, by ``eligibility.gate``; ``pick`` only ranks what it is given.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from registry_svc.model import Provider, RegistrySettings

Ranked = tuple[float, Provider]
"""(cost in seconds, provider): what ``CostModel.rank`` produces and ``pick`` chooses from."""


def effective_decode_tps(
    advertised: float, observed: float, running: int, *, load_factor: float
) -> float:
    """Observed rate when known (> 0), else the advertised rate derated by concurrency."""
    if observed > 0:
        return observed
    return advertised / (1.0 + load_factor * max(running, 0))


class CostModel:
    """The C5 cost with its weights taken once from the settings."""

    __slots__ = ("_cold", "_load_factor", "_pending", "_unknown_tps", "_waiting")

    def __init__(self, settings: RegistrySettings) -> None:
        self._cold = settings.cold_model_penalty_s
        self._waiting = settings.queue_depth_cost_s
        self._pending = settings.pending_cost_s
        self._load_factor = settings.tps_load_factor
        self._unknown_tps = settings.unknown_tps

    def rank(
        self,
        eligible: Iterable[tuple[Provider, int]],
        model_id: str,
        prompt_tokens: int,
        max_tokens: int,
    ) -> list[Ranked]:
        """Cost every (provider, pending) pair for one request, in input order.

        ``pending`` is the registry's slots in use for (provider, model): requests sent and
        not finished, so the engine is assumed to run at least that many. The provider's
        heartbeat load for ``model_id`` supplies the rest. A rate <= 0 (unknown) is
        replaced by ``unknown_tps``. One loop, no call per provider: this is Reserve's hot
        path.
        """
        cold, per_waiting, per_pending = self._cold, self._waiting, self._pending
        load_factor, unknown = self._load_factor, self._unknown_tps
        out: list[Ranked] = []
        append = out.append
        for p, pending in eligible:
            load = p.load(model_id)
            decode = load.observed_decode_tps
            if decode <= 0:
                running = load.running if load.running > pending else pending
                decode = p.decode_tps / (1.0 + load_factor * running)
                if decode <= 0:
                    decode = unknown
            prefill = p.prefill_tps if p.prefill_tps > 0 else unknown
            cost = (
                load.waiting * per_waiting
                + pending * per_pending
                + (load.backlog_tokens + max_tokens) / decode
                + prompt_tokens / prefill
            )
            append((cost if load.loaded else cost + cold, p))
        return out

    def cost(
        self, provider: Provider, model_id: str, pending: int, prompt_tokens: int, max_tokens: int
    ) -> float:
        """The C5 cost, in seconds, of one request on one provider (see ``rank``)."""
        return self.rank([(provider, pending)], model_id, prompt_tokens, max_tokens)[0][0]


def pick(
    ranked: Sequence[Ranked],
    rng: random.Random,
    *,
    near_tie_window_s: float = 3.0,
    avoid_version: str | None = None,
) -> Provider | None:
    """The cheapest provider, random among those within ``near_tie_window_s`` of it.

    With ``avoid_version``, providers of other versions are preferred; if every one has
    that version the whole pool is used (never fails closed). None only when ``ranked`` is
    empty. O(n); the rng is drawn only when there is a tie.
    """
    pool = ranked
    if avoid_version is not None:
        others = [r for r in ranked if r[1].version != avoid_version]
        if others:
            pool = others
    if not pool:
        return None
    limit = min(pool, key=_cost)[0] + near_tie_window_s
    ties = [r for r in pool if r[0] <= limit]
    if len(ties) == 1:
        return ties[0][1]
    return ties[rng.randrange(len(ties))][1]


def _cost(r: Ranked) -> float:
    return r[0]
