"""Cost-based provider selection (rule C5) with a soft ``avoid_version`` (B10).

Cost is an estimate, in seconds, of when a request would finish on a provider:

    state penalty + queue depth x 3 s + pending x 0.75 s + measured first-content time
      + backlog tokens / effective decode tps + prompt / prefill tps
      + max_tokens / effective decode tps

with effective decode tps = measured, else advertised / (1 + 0.27 x running). Measured
figures (``speed.SpeedBook``) count once they have enough samples; until then the first
content costs nothing extra and the advertised rate is used. ``pick`` takes the cheapest
and, among candidates within the near-tie window of it, picks at random so equal providers
share load. Eligibility (exclude list, allowlist, gates) is decided before, by
``eligibility.gate``; ``pick`` only ranks what it is given.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from registry_svc.model import Provider, RegistrySettings
from registry_svc.speed import Estimate

Ranked = tuple[float, Provider]
"""(cost in seconds, provider): what ``CostModel.rank`` produces and ``pick`` chooses from."""


_Terms = tuple[float, int, float, float, float, float]
# (fixed s, backlog tokens, running the rate holds for, s per decoded token at that
#  running, advertised tps, s per prompt token)

_UNMEASURED: Mapping[str, Estimate] = MappingProxyType({})


class CostModel:
    """The C5 cost with its weights taken once from the settings."""

    __slots__ = ("_cold", "_key", "_load_factor", "_pending", "_unknown_tps", "_waiting")

    def __init__(self, settings: RegistrySettings) -> None:
        self._cold = settings.cold_model_penalty_s
        self._waiting = settings.queue_depth_cost_s
        self._pending = settings.pending_cost_s
        self._load_factor = settings.tps_load_factor
        self._unknown_tps = settings.unknown_tps
        # Names the weights baked into the cached terms, so records shared between cost
        # models with different settings never mix them.
        weights = (self._cold, self._waiting, self._load_factor, self._unknown_tps)
        self._key = "cost\x1f" + "\x1f".join(map(repr, weights)) + "\x1f"

    def rank(
        self,
        eligible: Iterable[tuple[Provider, int]],
        model_id: str,
        prompt_tokens: int,
        max_tokens: int,
        measured: Mapping[str, Estimate] = _UNMEASURED,
    ) -> list[Ranked]:
        """Cost every (provider, pending) pair for one request, in input order.

        ``pending`` is the registry's slots in use for (provider, model): requests sent and
        not finished, so the engine is assumed to run at least that many. The provider's
        heartbeat load for ``model_id`` supplies the rest. A rate <= 0 (unknown) is
        replaced by ``unknown_tps``. ``measured`` maps provider id -> its estimate for
        ``model_id`` (``SpeedBook.for_model``): its first-content time is added and its
        decode rate, once known, replaces the advertised one (never derated: it was measured
        under whatever load there was). Reserve's hot path: the request-independent terms
        are cached on each record, the rest is one loop with no call per provider.
        """
        key = self._key + model_id
        per_pending, load_factor = self._pending, self._load_factor
        estimate_of = measured.get if measured else None
        out: list[Ranked] = []
        append = out.append
        for p, pending in eligible:
            terms = p.memo.get(key)
            if terms is None:
                terms = p.memo[key] = self._terms(p, model_id)
            fixed, backlog, running, decode_s, advertised, prefill_s = terms
            if pending > running:
                # More of our requests in flight than the heartbeat saw: derate further.
                decode_s = (1.0 + load_factor * pending) / advertised
            if estimate_of is not None:
                estimate = estimate_of(p.id)
                if estimate is not None:
                    fixed += estimate.ttft_cost_s
                    if estimate.decode_s:
                        decode_s = estimate.decode_s
            cost = fixed + pending * per_pending + (backlog + max_tokens) * decode_s
            append((cost + prompt_tokens * prefill_s, p))
        return out

    def cost(
        self,
        provider: Provider,
        model_id: str,
        pending: int,
        prompt_tokens: int,
        max_tokens: int,
        measured: Mapping[str, Estimate] = _UNMEASURED,
    ) -> float:
        """The C5 cost, in seconds, of one request on one provider (see ``rank``)."""
        ranked = self.rank([(provider, pending)], model_id, prompt_tokens, max_tokens, measured)
        return ranked[0][0]

    def _terms(self, p: Provider, model_id: str) -> _Terms:
        load = p.load(model_id)
        fixed = load.waiting * self._waiting + (0.0 if load.loaded else self._cold)
        prefill = p.prefill_tps if p.prefill_tps > 0 else self._unknown_tps
        never = float("inf")  # the rate does not depend on how many run
        if p.decode_tps > 0:
            running = float(load.running)
            decode_s = (1.0 + self._load_factor * load.running) / p.decode_tps
        else:
            running, decode_s = never, 1.0 / self._unknown_tps
        return (fixed, load.backlog_tokens, running, decode_s, p.decode_tps, 1.0 / prefill)


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
    limit = min([r[0] for r in pool]) + near_tie_window_s
    ties = [r for r in pool if r[0] <= limit]
    if len(ties) == 1:
        return ties[0][1]
    return ties[rng.randrange(len(ties))][1]
