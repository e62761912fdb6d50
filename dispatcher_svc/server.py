"""Wiring for the dispatcher process: gRPC Dispatch service + provider WebSocket link."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry

from contract import dispatcher_pb2, dispatcher_pb2_grpc
from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.dispatch.driver import Dispatcher
from dispatcher_svc.dispatch.metrics import DispatchMetrics
from dispatcher_svc.link import LinkServer
from dispatcher_svc.registry_client import GrpcRegistry
from dispatcher_svc.servicer import DispatcherServicer
from svckit.auth import aio_channel
from svckit.grpcserver import (
    CHANNEL_OPTIONS,
    RunningServer,
    start_grpc,
    start_metrics,
    wait_for_stop_signal,
)

log = logging.getLogger(__name__)
SERVICE_NAME = dispatcher_pb2.DESCRIPTOR.services_by_name["Dispatcher"].full_name


@dataclass
class DispatcherRuntime:
    rpc: RunningServer
    links: LinkServer
    link_port: int
    channel: grpc.aio.Channel
    registry: GrpcRegistry
    dispatcher: Dispatcher

    async def stop(self) -> None:
        await self.dispatcher.shutdown()
        await self.links.stop()
        await self.rpc.stop()
        await self.registry.aclose()
        await self.channel.close()


async def start(config: DispatcherConfig, registry: CollectorRegistry) -> DispatcherRuntime:
    channel = aio_channel(config.registry_addr, config.auth, CHANNEL_OPTIONS)
    registry_client = GrpcRegistry(channel)
    links = LinkServer(config, registry_client)
    link_port = await links.start()
    dispatcher = Dispatcher(config, links, registry_client, DispatchMetrics(registry))
    servicer = DispatcherServicer(dispatcher)

    def register(server: grpc.aio.Server) -> None:
        dispatcher_pb2_grpc.add_DispatcherServicer_to_server(servicer, server)

    running = await start_grpc(
        register, [SERVICE_NAME], host=config.host, port=config.port, auth=config.auth
    )
    return DispatcherRuntime(running, links, link_port, channel, registry_client, dispatcher)


async def main(config: DispatcherConfig) -> None:
    registry = CollectorRegistry()
    runtime = await start(config, registry)
    metrics_port = start_metrics(registry, config.host, config.metrics_port)
    log.info(
        "dispatcher listening",
        extra={
            "port": runtime.rpc.port,
            "link_port": runtime.link_port,
            "metrics_port": metrics_port,
        },
    )
    await wait_for_stop_signal(runtime.stop)
