"""Registry gRPC servicer: proto <-> the `registry.Registry` facade, nothing else.

Reserve and Release travel on the `Slots` stream (`slots.SlotSession`); a registry refusal
leaves the service one way only, as `RegistryError.failure()` in `SlotAnswer.refused`.
What the dispatcher reports is bounded by `wire` on the way in; every reply that grows with
the fleet (ListModels, Explain, Stats' ids) is capped by the registry's settings on the way
out, so no number of providers or models can make a reply the gRPC limit refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from contract import registry_pb2, registry_pb2_grpc
from registry_svc.registry import Registry
from registry_svc.slots import SlotSession
from registry_svc.wire import WireError, ask_from, loads_from, provider_from


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def UpsertProvider(
        self, request: registry_pb2.UpsertProviderRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.UpsertProviderReply:
        try:
            provider = provider_from(request.provider)
        except WireError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._registry.upsert_provider(provider, session=request.session)
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
        loads, limits = loads_from(request)
        self._registry.update_load(request.provider_id, loads, limits)
        if not request.trusted:
            self._registry.set_trusted(request.provider_id, False)
        return registry_pb2.ReportLoadReply()

    async def Slots(
        self,
        request_iterator: AsyncIterator[registry_pb2.SlotCall],
        context: grpc.aio.ServicerContext,
    ) -> None:
        await SlotSession(self._registry, context).serve()

    async def Explain(
        self, request: registry_pb2.ExplainRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ExplainReply:
        every = self._registry.explain(ask_from(request))
        rows = every[: self._registry.settings.explain_max_rows]
        return registry_pb2.ExplainReply(
            truncated=len(rows) < len(every),
            total=len(every),
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
            ],
        )

    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelsReply:
        models, truncated = self._registry.list_models()
        return registry_pb2.ListModelsReply(models=models, truncated=truncated)

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
