"""Wiring for the normalizer process."""

from __future__ import annotations

import logging

import grpc
from prometheus_client import CollectorRegistry

from contract import normalizer_pb2, normalizer_pb2_grpc
from normalizer_svc.config import NormalizerConfig
from normalizer_svc.servicer import NormalizerMetrics, NormalizerServicer
from svckit.grpcserver import RunningServer, start_grpc, start_metrics, wait_for_stop_signal

log = logging.getLogger(__name__)
SERVICE_NAME = normalizer_pb2.DESCRIPTOR.services_by_name["Normalizer"].full_name


async def start(config: NormalizerConfig, registry: CollectorRegistry) -> RunningServer:
    servicer = NormalizerServicer(config, NormalizerMetrics(registry))

    def register(server: grpc.aio.Server) -> None:
        normalizer_pb2_grpc.add_NormalizerServicer_to_server(servicer, server)

    return await start_grpc(
        register, [SERVICE_NAME], host=config.host, port=config.port, auth=config.auth
    )


async def main(config: NormalizerConfig) -> None:
    registry = CollectorRegistry()
    running = await start(config, registry)
    metrics_port = start_metrics(registry, config.host, config.metrics_port)
    log.info("normalizer listening", extra={"port": running.port, "metrics_port": metrics_port})
    await wait_for_stop_signal(running.stop)
