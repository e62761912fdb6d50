"""Who may serve an ask, and the refusal when nobody may: the A6/A7 ladder.

A request's first Reserve is its admission (A7): it is granted a slot, waits in the queue,
or is refused with one of the ``errors`` refusals and its retry-after. ``Admission`` applies
the one gate (``eligibility.gate``) to the fleet as the registry holds it and folds the
verdicts into one ladder rung (``classify``); the tools/vision capability checks (A6) are
read from the same reasons (``passes_capability``). Nothing here changes state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from enum import StrEnum

from registry_svc.breaker import Breaker
from registry_svc.eligibility import (
    GateRequest,
    Reason,
    ReasonCode,
    eligible_now,
    gate,
    seen_within,
)
from registry_svc.errors import (
    ModelTooLarge,
    NoCapableProvider,
    NoEligibleProvider,
    ProvidersBusy,
    QueueFull,
    QueueTimeout,
    RegistryError,
    UnknownModel,
)
from registry_svc.model import Ask, Provider, RegistrySettings, Shape, Traits
from registry_svc.store import ProviderStore
from registry_svc.versions import Version

# Reasons that do not make a provider incapable of a capability, only unusable right now
# (or for this attempt): A6 asks whether *any* fitting provider exists.
_NOT_CAPABILITY = frozenset({ReasonCode.AT_CAPACITY, ReasonCode.TOO_LARGE, ReasonCode.EXCLUDED})
_TOOLS_ONLY = frozenset({ReasonCode.NOT_VISION, ReasonCode.VISION_TEMPLATE_BROKEN})
_VISION_ONLY = frozenset({ReasonCode.BELOW_FLOOR, ReasonCode.TOOLS_TEMPLATE_BROKEN})
_WAITABLE = frozenset({ReasonCode.AT_CAPACITY})
_FITS_NOT = frozenset({ReasonCode.AT_CAPACITY, ReasonCode.TOO_LARGE})


def passes_capability(reasons: Iterable[Reason], capability: Shape) -> bool:
    """True if a provider with these reasons passes the ``tools`` or ``vision`` gates (A6).

    Capacity, size and the attempt's exclude list do not count (they are not about
    capability); offline, untrusted, allowlist, template, floor, vision and cooling do. The
    other capability's own gates are ignored, so tools+vision requests are checked twice.
    """
    ignored = _NOT_CAPABILITY | (_TOOLS_ONLY if capability is Shape.TOOLS else _VISION_ONLY)
    return all(r.code in ignored for r in reasons)


class Availability(StrEnum):
    """What the whole fleet can do for one request (the A6/A7 ladder, best first)."""

    ELIGIBLE = "eligible"  # some provider can take it now
    NO_TOOLS = "no_tools"  # A6: no online provider passes the tools gates
    NO_VISION = "no_vision"  # A6: same for vision
    AT_CAPACITY = "at_capacity"  # some fitting provider is merely full: queue
    RECONNECTING = "reconnecting"  # only providers seen recently could serve: queue
    TOO_LARGE = "too_large"  # only providers whose context is too small
    NONE = "none"  # nothing structurally eligible


def classify(
    verdicts: Iterable[tuple[Provider, list[Reason]]],
    traits: Traits,
    *,
    now: float,
    reconnect_grace_s: float,
) -> Availability:
    """Fold per-provider gate results into one ladder rung (A6 then A7).

    ``verdicts`` should cover every provider serving the model. A provider is
    "reconnecting" if its only blocking reasons are ``offline`` (plus ``at_capacity``) and
    it was seen within ``reconnect_grace_s``.
    """
    any_tools = any_vision = False
    any_full = any_reconnecting = any_too_large = False
    for provider, reasons in verdicts:
        if not reasons:
            return Availability.ELIGIBLE
        codes = {r.code for r in reasons}
        if traits.has_tools and not any_tools:
            any_tools = passes_capability(reasons, Shape.TOOLS)
        if traits.requires_vision and not any_vision:
            any_vision = passes_capability(reasons, Shape.VISION)
        if codes <= _WAITABLE:
            any_full = True
        elif codes <= _FITS_NOT:
            any_too_large = True
        elif (
            ReasonCode.OFFLINE in codes
            and codes <= _WAITABLE | {ReasonCode.OFFLINE}
            and seen_within(provider, now, reconnect_grace_s)
        ):
            any_reconnecting = True
    if traits.has_tools and not any_tools:
        return Availability.NO_TOOLS
    if traits.requires_vision and not any_vision:
        return Availability.NO_VISION
    if any_full:
        return Availability.AT_CAPACITY
    if any_reconnecting:
        return Availability.RECONNECTING
    if any_too_large:
        return Availability.TOO_LARGE
    return Availability.NONE


class Rung(StrEnum):
    """The ladder rung a request's first Reserve reached: the admissions metric's labels."""

    OK = "ok"
    QUEUE = "queue"
    UNKNOWN_MODEL = "unknown_model"
    NO_CAPABLE_PROVIDER = "no_capable_provider"
    UNAVAILABLE = "unavailable"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"


_RUNG_OF_REFUSAL: dict[type[RegistryError], Rung] = {
    UnknownModel: Rung.UNKNOWN_MODEL,
    NoCapableProvider: Rung.NO_CAPABLE_PROVIDER,
    NoEligibleProvider: Rung.UNAVAILABLE,
    ModelTooLarge: Rung.TOO_LARGE,
    ProvidersBusy: Rung.RATE_LIMITED,
    QueueFull: Rung.RATE_LIMITED,
    QueueTimeout: Rung.RATE_LIMITED,
}


def rung_of(refusal: RegistryError) -> Rung:
    """The rung a refused first Reserve counts under."""
    return _RUNG_OF_REFUSAL.get(type(refusal), Rung.UNAVAILABLE)


_QUEUEABLE = (Availability.AT_CAPACITY, Availability.RECONNECTING)


class Admission:
    """The gate applied to the registry's fleet, and the ladder's refusals.

    Reads the provider records and slot counts (``store``) and the cooldowns (``breaker``);
    a refusal's retry-after comes from the model's queue depth (``queue_depth``). Asks are
    taken settled (``Ask.settled``).
    """

    def __init__(
        self,
        settings: RegistrySettings,
        *,
        store: ProviderStore,
        breaker: Breaker,
        queue_depth: Callable[[str], int],
    ) -> None:
        self._settings = settings
        self._store = store
        self._breaker = breaker
        self._queue_depth = queue_depth
        self._floor = Version(settings.tools_version_floor)

    def gate_request(self, ask: Ask, now: float, *, check_silence: bool = True) -> GateRequest:
        """The gate's input for ``ask``; ``check_silence`` False lets a provider that went
        silent pass the liveness gate (what it could have served until now)."""
        stale_after_s = self._settings.heartbeat_timeout_s if check_silence else None
        return GateRequest.of(ask, now=now, tools_floor=self._floor, stale_after_s=stale_after_s)

    def verdicts(
        self, ask: Ask, providers: Iterable[Provider], now: float
    ) -> list[tuple[Provider, list[Reason]]]:
        """Each of ``providers`` with every reason it cannot take ``ask`` now (C7)."""
        req = self.gate_request(ask, now)
        model_id, shape = ask.model_id, ask.traits.shape
        in_use, cooling = self._store.in_use, self._breaker.cooling_until
        return [
            (
                p,
                gate(
                    p,
                    req,
                    in_use=in_use(p.id, model_id),
                    cooling_until=cooling(p.id, model_id, shape, now),
                ),
            )
            for p in providers
        ]

    def candidates(self, ask: Ask, now: float) -> list[tuple[Provider, int]]:
        """Every provider eligible for ``ask`` now, with its slots in use (the hot path)."""
        model_id = ask.model_id
        return eligible_now(
            self._store.serving(model_id),
            self.gate_request(ask, now),
            slots=self._store.slots_for_model(model_id),
            cooling=self._breaker.cooling(model_id, ask.traits.shape, now),
        )

    def must_wait(self, ask: Ask, now: float) -> None:
        """Nobody could take ``ask`` just now: raise the refusal the ladder gives, or return
        when the ask may wait in the queue.

        Unknown model -> UnknownModel (404); no online provider passes the tools/vision
        gates -> NoCapableProvider (503, never queued); capable providers merely full, or
        only reconnecting ones -> wait; only too large -> ModelTooLarge (503); otherwise
        NoEligibleProvider (503 + retry-after). A retry (``may_queue`` False) never waits:
        ProvidersBusy (429 + retry-after) when full, NoEligibleProvider when only
        reconnecting providers could serve. Cooling keys do not count as capacity.
        """
        model_id = ask.model_id
        serving = self._store.serving(model_id)
        if not self._known(serving, now):
            raise UnknownModel(f"model {model_id!r} is not served by any provider")
        availability = self._classify(ask, serving, now)
        if availability is Availability.ELIGIBLE:
            # Only reachable when a shared store lost the slot race; wait like a full fleet.
            availability = Availability.AT_CAPACITY
        if availability not in _QUEUEABLE:
            raise self.refusal(availability, ask)
        if not ask.may_queue:
            if availability is Availability.AT_CAPACITY:
                raise ProvidersBusy(
                    f"every provider for {model_id!r} is at capacity",
                    retry_after_s=self.retry_after_s(model_id),
                )
            raise self.refusal(Availability.NONE, ask)

    def stranded(self, ask: Ask, previous: Provider, now: float) -> RegistryError | None:
        """The refusal for a queued ``ask`` after ``previous`` (a provider's record before
        it changed) stopped serving, when no provider can serve the ask any more (C6); None
        when it should keep waiting, or ``previous`` could not have served it anyway."""
        # Ignore silence: a provider being declared silent was serving until now.
        could = gate(
            previous, self.gate_request(ask, now, check_silence=False), in_use=0, cooling_until=None
        )
        if any(r.code is not ReasonCode.AT_CAPACITY for r in could):
            return None
        availability = self._classify(ask, self._store.serving(ask.model_id), now)
        if availability is Availability.AT_CAPACITY:
            return None
        if availability is Availability.RECONNECTING:
            availability = Availability.NONE
        return self.refusal(availability, ask)

    def refusal(self, availability: Availability, ask: Ask) -> RegistryError:
        """The refusal for a rung that does not queue (ELIGIBLE reads as NONE)."""
        model_id = ask.model_id
        if availability is Availability.NO_TOOLS:
            return NoCapableProvider(
                f"tool calls on {model_id!r} need a provider at version >= "
                f"{self._floor.text} with a healthy chat template; none is available",
                capability=Shape.TOOLS,
            )
        if availability is Availability.NO_VISION:
            return NoCapableProvider(
                f"image or video input on {model_id!r} needs a vision provider with a "
                "healthy chat template; none is available",
                capability=Shape.VISION,
            )
        if availability is Availability.TOO_LARGE:
            return ModelTooLarge(
                f"the request ({ask.prompt_tokens + ask.max_tokens} tokens) is larger than "
                f"every provider of {model_id!r} can take"
            )
        return NoEligibleProvider(
            f"no provider can serve {model_id!r} right now",
            retry_after_s=self.retry_after_s(model_id),
        )

    def queue_full(self, model_id: str) -> QueueFull:
        return QueueFull(
            f"every provider for {model_id!r} is at capacity and the queue is full",
            retry_after_s=self.retry_after_s(model_id),
        )

    def timed_out(self, model_id: str) -> QueueTimeout:
        return QueueTimeout(
            f"every provider for {model_id!r} stayed at capacity for the whole queue wait",
            retry_after_s=self.retry_after_s(model_id),
        )

    def retry_after_s(self, model_id: str) -> int:
        """Retry-After for a refusal: 2 s with an empty queue, else depth x 3 in 2..30 s."""
        s = self._settings
        depth = self._queue_depth(model_id)
        if depth == 0:
            return s.retry_after_empty_s
        wait = depth * s.retry_after_per_waiter_s
        return max(s.retry_after_min_s, min(s.retry_after_max_s, wait))

    def _known(self, serving: Collection[Provider], now: float) -> bool:
        """Someone serves the model, or did within the reconnect grace (else A3: 404)."""
        grace = self._settings.reconnect_grace_s
        return any(p.online or seen_within(p, now, grace) for p in serving)

    def _classify(self, ask: Ask, serving: Iterable[Provider], now: float) -> Availability:
        return classify(
            self.verdicts(ask, serving, now),
            ask.traits,
            now=now,
            reconnect_grace_s=self._settings.reconnect_grace_s,
        )
