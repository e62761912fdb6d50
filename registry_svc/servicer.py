"""Registry gRPC servicer: proto <-> the `core.Registry` facade, and the one place registry
refusals become gRPC statuses (with the HTTP status, code and retry-after in trailers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2, registry_pb2_grpc
from registry_svc.core import AdmitKind, Registry, Reservation
from registry_svc.errors import RegistryError
from registry_svc.model import ModelInfo, ModelLoad, Outcome, Provider, Traits
from svckit.streams import StreamSession

log = logging.getLogger(__name__)
TRAILER_HTTP_STATUS = "hedgerow-http-status"
TRAILER_CODE = "hedgerow-code"
TRAILER_RETRY_AFTER = "hedgerow-retry-after"

_GRPC_STATUS = {
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
_VERDICTS = {
    AdmitKind.OK: registry_pb2.VERDICT_OK,
    AdmitKind.QUEUE: registry_pb2.VERDICT_QUEUE,
    AdmitKind.UNKNOWN_MODEL: registry_pb2.VERDICT_UNKNOWN_MODEL,
    AdmitKind.NO_CAPABLE_PROVIDER: registry_pb2.VERDICT_NO_CAPABLE_PROVIDER,
    AdmitKind.UNAVAILABLE: registry_pb2.VERDICT_UNAVAILABLE,
    AdmitKind.TOO_LARGE: registry_pb2.VERDICT_TOO_LARGE,
    AdmitKind.RATE_LIMITED: registry_pb2.VERDICT_RATE_LIMITED,
}


def traits_from(proto: common_pb2.Traits) -> Traits:
    return Traits(has_tools=proto.has_tools, requires_vision=proto.requires_vision)


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


async def abort_with(context: grpc.aio.ServicerContext, err: RegistryError) -> NoReturn:
    """Every registry refusal leaves the service through here."""
    context.set_trailing_metadata(
        (
            (TRAILER_HTTP_STATUS, str(err.http_status)),
            (TRAILER_CODE, err.code),
            (TRAILER_RETRY_AFTER, str(err.retry_after_s or 0)),
        )
    )
    await context.abort(
        _GRPC_STATUS.get(err.http_status, grpc.StatusCode.FAILED_PRECONDITION), err.message
    )
    raise AssertionError("unreachable")  # context.abort raises


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def UpsertProvider(
        self, request: registry_pb2.UpsertProviderRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.UpsertProviderReply:
        self._registry.upsert_provider(provider_from(request.provider))
        return registry_pb2.UpsertProviderReply()

    async def RemoveProvider(
        self, request: registry_pb2.RemoveProviderRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RemoveProviderReply:
        self._registry.remove_provider(request.provider_id)
        return registry_pb2.RemoveProviderReply()

    async def ReportLoad(
        self, request: registry_pb2.ReportLoadRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ReportLoadReply:
        # Every heartbeat refreshes liveness, loads or not; trust is only ever withdrawn here
        # (the dispatcher registers providers trusted once they pass the challenge).
        loads = {x.model: ModelLoad(running=x.running, waiting=x.waiting) for x in request.loads}
        limits = {x.model: x.max_concurrency for x in request.loads if x.max_concurrency > 0}
        self._registry.update_load(request.provider_id, loads, limits)
        if not request.trusted:
            self._registry.set_trusted(request.provider_id, False)
        return registry_pb2.ReportLoadReply()

    async def Admit(
        self, request: registry_pb2.AdmitRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.AdmitReply:
        verdict = self._registry.admit(
            request.model,
            traits_from(request.traits),
            allowlist=list(request.allowlist) or None,
            prompt_tokens=request.prompt_tokens,
            max_tokens=request.max_tokens or None,
        )
        return registry_pb2.AdmitReply(
            verdict=_VERDICTS[verdict.kind],
            message=verdict.message,
            retry_after_s=float(verdict.retry_after_s or 0),
        )

    @staticmethod
    def _ask(request: registry_pb2.ReserveRequest) -> dict[str, Any]:
        return {
            "exclude": list(request.exclude),
            "avoid_version": request.avoid_version or None,
            "allowlist": list(request.allowlist) or None,
            "prompt_tokens": request.prompt_tokens,
            "max_tokens": request.max_tokens or None,
            "may_queue": request.may_queue,
            "reservation_id": request.reservation_id or None,
        }

    @staticmethod
    def _reply(reservation: Reservation) -> registry_pb2.ReserveReply:
        return registry_pb2.ReserveReply(
            reservation_id=reservation.id,
            provider_id=reservation.provider_id,
            provider_version=reservation.provider_version,
            queued_s=reservation.queued_s,
        )

    def _reserve_now(
        self, request: registry_pb2.ReserveRequest
    ) -> registry_pb2.ReserveReply | None:
        reservation = self._registry.reserve_now(
            request.model, traits_from(request.traits), **self._ask(request)
        )
        return None if reservation is None else self._reply(reservation)

    async def _reserve(
        self, request: registry_pb2.ReserveRequest, timeout_s: float | None
    ) -> registry_pb2.ReserveReply:
        reservation = await self._registry.reserve(
            request.model, traits_from(request.traits), timeout_s=timeout_s, **self._ask(request)
        )
        return self._reply(reservation)

    def _release(self, request: registry_pb2.ReleaseRequest) -> registry_pb2.ReleaseReply:
        result = self._registry.release(request.reservation_id, Outcome(request.status_code))
        return registry_pb2.ReleaseReply(
            released=result.released, cooldown_entered=result.cooldown_entered
        )

    async def Reserve(
        self, request: registry_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ReserveReply:
        remaining = context.time_remaining()
        try:
            return await self._reserve(
                request, None if remaining is None else max(0.0, remaining - 0.05)
            )
        except RegistryError as err:
            await abort_with(context, err)

    async def Release(
        self, request: registry_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ReleaseReply:
        return self._release(request)

    async def Slots(
        self,
        request_iterator: AsyncIterator[registry_pb2.SlotCall],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await SlotSession(self, context).serve()

    async def Explain(
        self, request: registry_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ExplainReply:
        rows = self._registry.explain(
            request.model, traits_from(request.traits), allowlist=list(request.allowlist) or None
        )
        return registry_pb2.ExplainReply(
            providers=[
                registry_pb2.ProviderVerdict(
                    provider_id=row.provider_id,
                    version=row.version,
                    eligible=row.eligible,
                    reasons=[
                        f"{r.code.value}({r.detail})" if r.detail else r.code.value
                        for r in row.reasons
                    ],
                )
                for row in rows
            ]
        )

    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelsReply:
        return registry_pb2.ListModelsReply(models=self._registry.list_models())

    async def Stats(
        self, request: registry_pb2.StatsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.StatsReply:
        stats = self._registry.stats()
        return registry_pb2.StatsReply(
            providers_online=stats.providers_online,
            slots_in_use=stats.slots_in_use,
            queue_depth=sum(stats.queue_depth.values()),
            cooldowns_entered=stats.cooldowns_entered,
            online_provider_ids=self._registry.online_provider_ids(),
        )


class SlotSession(StreamSession[registry_pb2.SlotCall]):
    """One dispatcher's `Slots` stream. Reserves run concurrently (one may wait in the
    queue while later ones are answered); a Release of a reservation whose Reserve is still
    waiting cancels that Reserve; reservations granted here and not released when the
    stream ends are released as cancelled (the dispatcher that held them is gone)."""

    def __init__(self, servicer: RegistryServicer, context: grpc.aio.ServicerContext) -> None:
        super().__init__(context)
        self._servicer = servicer
        self._waiting: dict[str, asyncio.Task[None]] = {}  # reservation id -> its Reserve
        self._held: set[str] = set()  # granted over this stream, not yet released

    async def on_message(self, message: registry_pb2.SlotCall) -> None:
        kind = message.WhichOneof("call")
        if kind == "release":
            await self._release(message)
        elif kind == "reserve":
            granted = self._servicer._reserve_now(message.reserve)
            if granted is None:
                self._start_reserve(message)  # to be refused, or to wait in the queue
            else:  # the common case, answered without a task
                self._held.add(granted.reservation_id)
                await self.write(registry_pb2.SlotAnswer(call_id=message.call_id, reserved=granted))

    async def on_end(self) -> None:
        waiting = list(self._waiting.values())
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        if self._held:
            log.warning(
                "slot stream ended; releasing its reservations", extra={"count": len(self._held)}
            )
        for reservation_id in self._held:
            self._servicer._registry.release(reservation_id, Outcome(Outcome.CANCELLED))
        self._held.clear()

    async def _release(self, call: registry_pb2.SlotCall) -> None:
        rid = call.release.reservation_id
        waiting = self._waiting.pop(rid, None)
        if waiting is not None:
            waiting.cancel()
        self._held.discard(rid)
        reply = self._servicer._release(call.release)
        await self.write(registry_pb2.SlotAnswer(call_id=call.call_id, released=reply))

    def _start_reserve(self, call: registry_pb2.SlotCall) -> None:
        # Unnamed reserves are tracked too (under their call id), so that every one still
        # running when the stream ends is cancelled and its grant, if any, released.
        key = call.reserve.reservation_id or f"#{call.call_id}"
        task = asyncio.get_running_loop().create_task(self._reserve(call))
        self._waiting[key] = task

        def forget(_done: asyncio.Task[None]) -> None:
            if self._waiting.get(key) is task:
                del self._waiting[key]

        task.add_done_callback(forget)

    async def _reserve(self, call: registry_pb2.SlotCall) -> None:
        try:
            reply = await self._servicer._reserve(call.reserve, call.timeout_s or None)
        except RegistryError as err:
            refused = err.failure().to_proto()
            await self.write(registry_pb2.SlotAnswer(call_id=call.call_id, refused=refused))
            return
        self._held.add(reply.reservation_id)
        await self.write(registry_pb2.SlotAnswer(call_id=call.call_id, reserved=reply))
