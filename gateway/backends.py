"""gRPC clients of the services behind the gateway."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2_grpc

from contract import dispatcher_pb2_grpc, normalizer_pb2_grpc, registry_pb2_grpc
from gateway.config import GatewayConfig
from gateway.mux import DispatchMux
from svckit.auth import aio_channel
from svckit.grpcserver import CHANNEL_OPTIONS


@dataclass
class Backends:
    normalizer: normalizer_pb2_grpc.NormalizerStub
    registry: registry_pb2_grpc.RegistryStub
    dispatches: DispatchMux
    channels: tuple[grpc.aio.Channel, ...]
    # gRPC health of the services /readyz depends on (A17), by name.
    health: dict[str, health_pb2_grpc.HealthStub]

    @classmethod
    def connect(cls, config: GatewayConfig) -> Backends:
        auth, options = config.auth, CHANNEL_OPTIONS
        n = aio_channel(config.normalizer_addr, auth, options)
        r = aio_channel(config.registry_addr, auth, options)
        d = aio_channel(config.dispatcher_addr, auth, options)
        return cls(
            normalizer=normalizer_pb2_grpc.NormalizerStub(n),
            registry=registry_pb2_grpc.RegistryStub(r),
            dispatches=DispatchMux(dispatcher_pb2_grpc.DispatcherStub(d)),
            channels=(n, r, d),
            health={
                "registry": health_pb2_grpc.HealthStub(r),
                "dispatcher": health_pb2_grpc.HealthStub(d),
            },
        )

    async def close(self) -> None:
        await self.dispatches.aclose()
        for channel in self.channels:
            await channel.close()
