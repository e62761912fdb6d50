"""The registry's proto <-> domain conversions, shared by the servicer and the Slots
stream's session: the one place a wire message becomes an `Ask`, a `Provider`, a load, a
speed sample or a reply.

It is also the one place the registry bounds what it is told. Providers are strangers'
machines and what they report reaches the registry through the dispatcher, which validates
it too; this is the second line (defence in depth): every number a provider could choose is
clamped into ``WireLimits`` here, so no figure can make a cost negative, infinite or NaN
(a negative ``waiting`` once won every request), and no registration can make the table or
the replies that list it grow without bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2
from registry_svc.model import Ask, ModelInfo, ModelLoad, Provider, SpeedSample, Traits
from registry_svc.reservations import ReleaseResult, Reservation


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Bounds on every figure the registry accepts from the dispatcher (docs/behavior.md,
    C8). Far above anything honest, so they only ever cut lies."""

    max_decode_tps: float = 10_000.0  # advertised or measured, per stream
    max_prefill_tps: float = 1_000_000.0
    max_ttft_s: float = 600.0  # a measured first-content time
    max_load: int = 100_000  # running / waiting per model
    max_concurrency: int = 1024  # slots per (provider, model)
    max_models: int = 1024  # models per provider; more are dropped
    max_id_chars: int = 256  # model ids (longer ones are dropped), versions, serials


LIMITS = WireLimits()


class WireError(ValueError):
    """A message the registry cannot take at all (the servicer answers INVALID_ARGUMENT)."""


def clamp(value: float, upper: float) -> float:
    """``value`` in [0, upper]; NaN and negatives are 0, +inf is ``upper``."""
    if not value > 0:  # also NaN
        return 0.0
    return min(value, upper)


def count(value: int, upper: int) -> int:
    """An integer count in [0, upper]."""
    return max(0, min(value, upper))


def traits_from(proto: common_pb2.Traits) -> Traits:
    return Traits(has_tools=proto.has_tools, requires_vision=proto.requires_vision)


def ask_from(request: registry_pb2.ReserveRequest | registry_pb2.ExplainRequest) -> Ask:
    """The routing question a Reserve or an Explain asks. Unset proto fields (0, "", an
    empty list) mean "not given", as ``Ask`` reads them; an Explain asks only about the
    model, traits and allowlist."""
    model_id, traits = request.model, traits_from(request.traits)
    allowlist = frozenset(request.allowlist)
    if isinstance(request, registry_pb2.ExplainRequest):
        return Ask(model_id, traits, allowlist=allowlist)
    return Ask(
        model_id,
        traits,
        allowlist=allowlist,
        exclude=frozenset(request.exclude),
        avoid_version=request.avoid_version,
        prompt_tokens=request.prompt_tokens,
        max_tokens=request.max_tokens,
        may_queue=request.may_queue,
        reservation_id=request.reservation_id,
    )


def model_from(info: common_pb2.ModelInfo, limits: WireLimits = LIMITS) -> ModelInfo:
    def tri(name: str) -> bool | None:
        return getattr(info, name) if info.HasField(name) else None

    return ModelInfo(
        id=info.id,
        is_vision=info.is_vision,
        template_render_ok=tri("template_render_ok"),
        cap_system=tri("cap_system"),
        cap_tools=tri("cap_tools"),
        cap_vision=tri("cap_vision"),
        max_concurrency=max(1, count(info.max_concurrency, limits.max_concurrency)),
    )


def provider_from(info: registry_pb2.ProviderInfo, limits: WireLimits = LIMITS) -> Provider:
    """The provider record an upsert describes, bounded: advertised rates clamped, at most
    ``max_models`` models (the first ones; empty or over-long ids dropped), over-long
    versions and serials cut. Raises WireError for a missing or over-long provider id."""
    if not info.id or len(info.id) > limits.max_id_chars:
        raise WireError(f"provider id must be 1..{limits.max_id_chars} characters")
    models: dict[str, ModelInfo] = {}
    for m in info.models:
        if len(models) >= limits.max_models:
            break
        if m.id and len(m.id) <= limits.max_id_chars and m.id not in models:
            models[m.id] = model_from(m, limits)
    cut = limits.max_id_chars
    return Provider(
        id=info.id,
        serial=(info.serial or info.id)[:cut],
        version=info.version[:cut],
        models=models,
        online=True,
        trusted=info.trusted,
        decode_tps=clamp(info.decode_tps, limits.max_decode_tps),
        prefill_tps=clamp(info.prefill_tps, limits.max_prefill_tps),
    )


def loads_from(
    request: registry_pb2.ReportLoadRequest, limits: WireLimits = LIMITS
) -> tuple[Mapping[str, ModelLoad], Mapping[str, int]]:
    """A heartbeat's per-model loads and changed concurrency limits, clamped to
    [0, max_load] and [1, max_concurrency]; at most ``max_models`` entries are read."""
    loads: dict[str, ModelLoad] = {}
    limits_by_model: dict[str, int] = {}
    for x in request.loads[: limits.max_models]:
        loads[x.model] = ModelLoad(
            running=count(x.running, limits.max_load), waiting=count(x.waiting, limits.max_load)
        )
        if x.max_concurrency > 0:
            limits_by_model[x.model] = count(x.max_concurrency, limits.max_concurrency)
    return loads, limits_by_model


def speed_from(
    release: registry_pb2.ReleaseRequest, limits: WireLimits = LIMITS
) -> SpeedSample | None:
    """The speed sample a Release carries, clamped; None when it carries none. A
    first-content time that is not a finite number >= 0 is dropped, not clamped."""
    if not release.HasField("speed"):
        return None
    speed = release.speed
    ttft: float | None = speed.ttft_s if speed.HasField("ttft_s") else None
    if ttft is None or not math.isfinite(ttft) or ttft < 0:
        ttft = None
    elif ttft > limits.max_ttft_s:
        ttft = limits.max_ttft_s
    tps = clamp(speed.decode_tps, limits.max_decode_tps) if math.isfinite(speed.decode_tps) else 0.0
    if ttft is None and not tps:
        return None
    return SpeedSample(ttft_s=ttft, no_content=speed.no_content, decode_tps=tps)


def reply_from(reservation: Reservation) -> registry_pb2.ReserveReply:
    return registry_pb2.ReserveReply(
        reservation_id=reservation.id,
        provider_id=reservation.provider_id,
        provider_version=reservation.provider_version,
        queued_s=reservation.queued_s,
    )


def release_reply(result: ReleaseResult) -> registry_pb2.ReleaseReply:
    return registry_pb2.ReleaseReply(
        released=result.released, cooldown_entered=result.cooldown_entered
    )
