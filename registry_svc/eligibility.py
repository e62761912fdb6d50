"""The one eligibility gate (rule C1).

``gate`` is the only place that decides whether a provider may serve a request. Reserve
(the admission), Explain, the tools/vision capability checks (A6) and the queue's fail-fast
(C6) all read its reasons, and the selection hot path (``eligible_now``) is a filter over
it, so none of them can drift. It returns *every* reason, so Explain (C7) can show operators
all of them at once; an empty list means eligible now.

``liveness`` is the gate's provider-state part on its own (online, trusted, heard from
lately); ``is_live`` is the one predicate for "this provider is live" wherever the registry
lists live providers or their models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from registry_svc.model import Ask, ModelInfo, Provider, Traits
from registry_svc.versions import Version


class ReasonCode(StrEnum):
    """Why a provider cannot take a request (C7 names)."""

    OFFLINE = "offline"
    UNTRUSTED = "untrusted"
    MODEL_NOT_SERVED = "model_not_served"
    EXCLUDED = "excluded"
    NOT_IN_ALLOWLIST = "not_in_allowlist"
    NOT_VISION = "not_vision"
    BELOW_FLOOR = "below_floor"
    TEMPLATE_BROKEN = "template_broken"
    TOOLS_TEMPLATE_BROKEN = "tools_template_broken"
    VISION_TEMPLATE_BROKEN = "vision_template_broken"
    COOLING_DOWN_UNTIL = "cooling_down_until"
    TOO_LARGE = "too_large"
    AT_CAPACITY = "at_capacity"


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason; ``detail`` is a short human hint (version vs floor, remaining cooldown,
    size vs limit)."""

    code: ReasonCode
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GateRequest:
    """The request-level half of the gate's input, built once per decision.

    ``exclude`` holds provider ids, ``allowlist`` provider serials (None = no allowlist).
    ``request_tokens`` (prompt + max_tokens) is compared with the model's context limit.
    ``stale_after_s``: a provider silent for longer counts as offline even before anyone
    marks it so (None disables the check).
    """

    model_id: str
    traits: Traits
    now: float
    tools_floor: Version
    exclude: frozenset[str] = frozenset()
    allowlist: frozenset[str] | None = None
    request_tokens: int = 0
    stale_after_s: float | None = None
    record_key: str = field(init=False, repr=False, compare=False)
    """Names this request's kind (model, traits, floor) in a provider record's memo."""

    def __post_init__(self) -> None:
        # A str key hashes once per request; a tuple key would be hashed again per provider.
        kind = f"{self.traits.has_tools:d}{self.traits.requires_vision:d}"
        key = f"reasons\x1f{self.model_id}\x1f{kind}\x1f{self.tools_floor.text}"
        object.__setattr__(self, "record_key", key)

    @classmethod
    def of(
        cls, ask: Ask, *, now: float, tools_floor: Version, stale_after_s: float | None
    ) -> GateRequest:
        """The gate's view of a settled ``ask`` (``Ask.settled``: max_tokens estimated)."""
        return cls(
            model_id=ask.model_id,
            traits=ask.traits,
            now=now,
            tools_floor=tools_floor,
            exclude=ask.exclude,
            allowlist=ask.allowlist,
            request_tokens=ask.prompt_tokens + ask.max_tokens,
            stale_after_s=stale_after_s,
        )


_OFFLINE = Reason(ReasonCode.OFFLINE)
_UNTRUSTED = Reason(ReasonCode.UNTRUSTED)


def liveness(provider: Provider, now: float, stale_after_s: float | None) -> list[Reason]:
    """The provider-state reasons (C1, F1): ``offline`` if it is marked so or was silent for
    longer than ``stale_after_s`` (None: silence not checked), ``untrusted`` until its
    challenge passed. A new list the caller may extend."""
    reasons: list[Reason] = []
    if _offline(provider, now, stale_after_s):
        reasons.append(_OFFLINE)
    if not provider.trusted:
        reasons.append(_UNTRUSTED)
    return reasons


def _offline(provider: Provider, now: float, stale_after_s: float | None) -> bool:
    """Marked offline, or silent for longer than ``stale_after_s`` (None: not checked)."""
    return not provider.online or (
        stale_after_s is not None and now - provider.last_seen > stale_after_s
    )


def seen_within(provider: Provider, now: float, grace_s: float) -> bool:
    """Heard from within ``grace_s``: a provider merely reconnecting (A7), one the registry
    still remembers."""
    return now - provider.last_seen <= grace_s


def is_live(provider: Provider, now: float, stale_after_s: float) -> bool:
    """Online, trusted and heard from within ``stale_after_s``: no ``liveness`` reason."""
    return provider.trusted and not _offline(provider, now, stale_after_s)


def _record_reasons(
    provider: Provider, model_id: str, traits: Traits, tools_floor: Version
) -> tuple[Reason, ...]:
    """The reasons that depend only on the provider record and the request's kind: serves
    the model, vision model for vision requests, tools version floor, ``template_render_ok``
    not false (every shape), and the tools/vision template capability not false for that
    shape."""
    reasons: list[Reason] = []
    info = provider.models.get(model_id)
    if info is None:
        reasons.append(Reason(ReasonCode.MODEL_NOT_SERVED))
    elif traits.requires_vision and not info.is_vision:
        reasons.append(Reason(ReasonCode.NOT_VISION))
    if traits.has_tools:
        version = provider.parsed_version
        if version is None or version < tools_floor:
            shown = provider.version or "missing"
            detail = f"version {shown} < {tools_floor.text}"
            reasons.append(Reason(ReasonCode.BELOW_FLOOR, detail=detail))
    if info is not None:
        if info.template_render_ok is False:
            reasons.append(Reason(ReasonCode.TEMPLATE_BROKEN))
        if traits.has_tools and info.cap_tools is False:
            reasons.append(Reason(ReasonCode.TOOLS_TEMPLATE_BROKEN))
        if traits.requires_vision and info.cap_vision is False:
            reasons.append(Reason(ReasonCode.VISION_TEMPLATE_BROKEN))
    return tuple(reasons)


def gate(
    provider: Provider, req: GateRequest, *, in_use: int, cooling_until: float | None
) -> list[Reason]:
    """Every reason ``provider`` cannot take ``req`` now, in a fixed order; empty = eligible.

    ``in_use`` is the registry's slot count for (provider, model); ``cooling_until`` the
    breaker's cooldown end for (provider, model, request shape), None if not cooling.
    Gates (C1): online and trusted (``liveness``), serves the model, vision, tools floor,
    template and template capabilities, not excluded, in the allowlist, not cooling, fits
    the model's context, and a free slot.
    """
    reasons: list[Reason] = []
    _walk(provider, req, in_use, cooling_until, reasons)
    return reasons


def _walk(
    provider: Provider,
    req: GateRequest,
    in_use: int,
    cooling_until: float | None,
    out: list[Reason] | None,
) -> bool:
    """The one walk over the gates: True when ``provider`` passes them all. With ``out``,
    every failing gate's reason is appended; without, it stops at the first (selection's
    hot path asks this of every provider of a model on every request, and builds no
    reason it would throw away)."""
    ok = True
    now = req.now
    if _offline(provider, now, req.stale_after_s):
        if out is None:
            return False
        ok = False
        out.append(_OFFLINE)
    if not provider.trusted:
        if out is None:
            return False
        ok = False
        out.append(_UNTRUSTED)
    # The record's own part is cached on the record (safe: a record never changes).
    cached: tuple[tuple[Reason, ...], ModelInfo | None] | None = provider.memo.get(req.record_key)
    if cached is None:
        cached = (
            _record_reasons(provider, req.model_id, req.traits, req.tools_floor),
            provider.models.get(req.model_id),
        )
        provider.memo[req.record_key] = cached
    record, info = cached
    if record:
        if out is None:
            return False
        ok = False
        out.extend(record)
    if provider.id in req.exclude:
        if out is None:
            return False
        ok = False
        out.append(Reason(ReasonCode.EXCLUDED))
    if req.allowlist is not None and provider.serial not in req.allowlist:
        if out is None:
            return False
        ok = False
        out.append(Reason(ReasonCode.NOT_IN_ALLOWLIST))
    if info is None:
        return ok
    if cooling_until is not None and cooling_until > now:
        if out is None:
            return False
        ok = False
        detail = f"{req.traits.shape.value} for {cooling_until - now:.0f}s"
        out.append(Reason(ReasonCode.COOLING_DOWN_UNTIL, detail=detail))
    if info.max_context_tokens is not None and req.request_tokens > info.max_context_tokens:
        if out is None:
            return False
        ok = False
        detail = f"{req.request_tokens} > {info.max_context_tokens} tokens"
        out.append(Reason(ReasonCode.TOO_LARGE, detail=detail))
    if in_use >= info.max_concurrency:
        if out is None:
            return False
        ok = False
        out.append(Reason(ReasonCode.AT_CAPACITY))
    return ok


def eligible_now(
    providers: Iterable[Provider],
    req: GateRequest,
    *,
    slots: Mapping[str, int],
    cooling: Mapping[str, float],
) -> list[tuple[Provider, int]]:
    """The providers ``gate`` passes, in input order, each with its slots in use.

    ``slots`` maps provider id -> slots in use for ``req.model_id`` (absent: none);
    ``cooling`` maps provider id -> cooldown end for (model, request shape) (absent: not
    cooling). Reserve's selection hot path.
    """
    in_use, cooling_until = slots.get, cooling.get
    out: list[tuple[Provider, int]] = []
    for p in providers:
        pending = in_use(p.id, 0)
        if _walk(p, req, pending, cooling_until(p.id), None):
            out.append((p, pending))
    return out
