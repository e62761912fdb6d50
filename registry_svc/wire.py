"""The registry's proto <-> domain conversions, shared by the servicer and the Slots
stream's session: the one place a wire message becomes an `Ask`, a `Provider`, a reply."""

from __future__ import annotations

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2
from registry_svc.model import Ask, ModelInfo, Provider, Traits
from registry_svc.reservations import ReleaseResult, Reservation


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


def model_from(info: common_pb2.ModelInfo) -> ModelInfo:
    def tri(name: str) -> bool | None:
        return getattr(info, name) if info.HasField(name) else None

    return ModelInfo(
        id=info.id,
        is_vision=info.is_vision,
        template_render_ok=tri("template_render_ok"),
        cap_system=tri("cap_system"),
        cap_tools=tri("cap_tools"),
        cap_vision=tri("cap_vision"),
        max_concurrency=max(1, info.max_concurrency),
    )


def provider_from(info: registry_pb2.ProviderInfo) -> Provider:
    return Provider(
        id=info.id,
        serial=info.serial or info.id,
        version=info.version,
        models={m.id: model_from(m) for m in info.models},
        online=True,
        trusted=info.trusted,
        decode_tps=info.decode_tps,
        prefill_tps=info.prefill_tps,
    )


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
