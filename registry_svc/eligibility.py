"""The one eligibility gate (rule C1) and the admission classification built on it.

``gate`` is the only place that decides whether a provider may serve a request; Admit,
Reserve, Explain, the tools/vision capability checks (A6) and the queue's fail-fast (C6)
all read its reasons, so they cannot drift apart. It returns *every* reason, so Explain
(C7) can show operators all of them at once; an empty list means eligible now.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from registry_svc.model import ModelInfo, Provider, Shape, Traits
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
    """One reason; ``until`` is the cooldown end (monotonic s) for ``cooling_down_until``,
    ``detail`` a short human hint (version vs floor, remaining cooldown, size vs limit)."""

    code: ReasonCode
    until: float | None = None
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


def record_reasons(
    provider: Provider, model_id: str, traits: Traits, tools_floor: Version
) -> list[Reason]:
    """The reasons that depend only on the provider record and the request's traits.

    Online flag, trusted, serves the model, vision model for vision requests, tools version
    floor, ``template_render_ok`` not false (every shape), and the tools/vision template
    capability not false for that shape. Part of ``gate``; cached per record by the hot
    path, which is safe because a record never changes.
    """
    reasons: list[Reason] = []
    info = provider.models.get(model_id)
    if not provider.online:
        reasons.append(Reason(ReasonCode.OFFLINE))
    if not provider.trusted:
        reasons.append(Reason(ReasonCode.UNTRUSTED))
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
    return reasons


def gate(
    provider: Provider, req: GateRequest, *, in_use: int, cooling_until: float | None
) -> list[Reason]:
    """Every reason ``provider`` cannot take ``req`` now; empty = eligible.

    ``in_use`` is the registry's slot count for (provider, model); ``cooling_until`` the
    breaker's cooldown end for (provider, model, request shape), None if not cooling.
    Gates (C1): the record's own (``record_reasons``), then not silent for longer than
    ``stale_after_s`` (offline), not excluded, in the allowlist, not cooling, fits the
    model's context, and a free slot.
    """
    reasons = record_reasons(provider, req.model_id, req.traits, req.tools_floor)
    if (
        provider.online
        and req.stale_after_s is not None
        and req.now - provider.last_seen > req.stale_after_s
    ):
        reasons.insert(0, Reason(ReasonCode.OFFLINE))
    if provider.id in req.exclude:
        reasons.append(Reason(ReasonCode.EXCLUDED))
    if req.allowlist is not None and provider.serial not in req.allowlist:
        reasons.append(Reason(ReasonCode.NOT_IN_ALLOWLIST))
    info = provider.models.get(req.model_id)
    if info is None:
        return reasons
    if cooling_until is not None and cooling_until > req.now:
        detail = f"{req.traits.shape.value} for {cooling_until - req.now:.0f}s"
        reasons.append(Reason(ReasonCode.COOLING_DOWN_UNTIL, until=cooling_until, detail=detail))
    if info.max_context_tokens is not None and req.request_tokens > info.max_context_tokens:
        detail = f"{req.request_tokens} > {info.max_context_tokens} tokens"
        reasons.append(Reason(ReasonCode.TOO_LARGE, detail=detail))
    if in_use >= info.max_concurrency:
        reasons.append(Reason(ReasonCode.AT_CAPACITY))
    return reasons


def eligible_now(
    providers: Iterable[Provider],
    req: GateRequest,
    *,
    slots: Mapping[str, int],
    cooling: Mapping[str, float],
) -> list[tuple[Provider, int]]:
    """The providers for which ``gate`` returns no reason, each with its slots in use.

    ``slots`` maps provider id -> slots in use for ``req.model_id``; ``cooling`` maps
    provider id -> cooldown end for (model, request shape). Reserve's hot path: it scans
    every provider of a model on every request, so the record's own verdict is cached on
    the record and the request-level rules of ``gate`` are repeated inline (a property
    test holds this equal to ``gate``; a rule added there must be added here).
    """
    model_id, now, traits, floor = req.model_id, req.now, req.traits, req.tools_floor
    # A str key hashes once per request; a tuple key would be hashed again per provider.
    key = f"gate\x1f{model_id}\x1f{traits.has_tools:d}{traits.requires_vision:d}\x1f{floor.text}"
    stale_after = float("inf") if req.stale_after_s is None else req.stale_after_s
    exclude, allowlist, tokens = req.exclude, req.allowlist, req.request_tokens
    in_use = slots.get
    cooling_until = cooling.get if cooling else None
    out: list[tuple[Provider, int]] = []
    for p in providers:
        # The model's info when the record passes its own gates, else False.
        info: ModelInfo | Literal[False] | None = p.memo.get(key)
        if info is None:
            if record_reasons(p, model_id, traits, floor):
                info = False
            else:
                info = p.models[model_id]
            p.memo[key] = info
        if info is False or now - p.last_seen > stale_after:
            continue
        pending = in_use(p.id, 0)
        if pending >= info.max_concurrency:
            continue
        if (exclude and p.id in exclude) or (allowlist is not None and p.serial not in allowlist):
            continue
        if info.max_context_tokens is not None and tokens > info.max_context_tokens:
            continue
        if cooling_until is not None and cooling_until(p.id, now) > now:
            continue
        out.append((p, pending))
    return out


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
            and now - provider.last_seen <= reconnect_grace_s
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
