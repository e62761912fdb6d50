"""Wiring for the registry process: gRPC service, periodic sweep, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

import grpc
from prometheus_client import CollectorRegistry, Gauge

from contract import registry_pb2, registry_pb2_grpc
from registry_svc.config import RegistryConfig
from registry_svc.registry import Registry
from registry_svc.servicer import RegistryServicer
from svckit.grpcserver import RunningServer, start_grpc, start_metrics, wait_for_stop_signal

log = logging.getLogger(__name__)
SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
SWEEP_INTERVAL_S = 1.0


class RegistryMetrics:
    """Gauges refreshed from `Registry.stats()` on the event loop (the registry is not
    thread-safe, so the scrape thread never touches it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.online = Gauge("registry_providers_online", "Online providers", registry=registry)
        self.slots = Gauge("registry_slots_in_use", "Slots in use", registry=registry)
        self.queue = Gauge("registry_queue_depth", "Queued requests", ["model"], registry=registry)
        self.cooldowns = Gauge(
            "registry_cooldowns_entered", "Cooldowns entered since start", registry=registry
        )
        self.admissions = Gauge(
            "registry_admissions",
            "Admissions by verdict since start",
            ["verdict"],
            registry=registry,
        )

    def refresh(self, core: Registry) -> None:
        stats = core.stats()
        self.online.set(stats.providers_online)
        self.slots.set(stats.slots_in_use)
        for model, depth in stats.queue_depth.items():
            self.queue.labels(model).set(depth)
        self.cooldowns.set(stats.cooldowns_entered)
        for verdict, count in stats.admissions.items():
            self.admissions.labels(verdict).set(count)


async def housekeeping(core: Registry, metrics: RegistryMetrics | None) -> None:
    while True:
        core.sweep()
        if metrics is not None:
            metrics.refresh(core)
        await asyncio.sleep(SWEEP_INTERVAL_S)


def build_registry(config: RegistryConfig) -> Registry:
    return Registry(config.settings, clock=time.monotonic, rng=random.Random())


async def start(config: RegistryConfig, core: Registry) -> RunningServer:
    servicer = RegistryServicer(core)

    def register(server: grpc.aio.Server) -> None:
        registry_pb2_grpc.add_RegistryServicer_to_server(servicer, server)

    return await start_grpc(
        register, [SERVICE_NAME], host=config.host, port=config.port, auth=config.auth
    )


async def main(config: RegistryConfig) -> None:
    prom = CollectorRegistry()
    core = build_registry(config)
    running = await start(config, core)
    metrics = RegistryMetrics(prom)
    metrics_port = start_metrics(prom, config.host, config.metrics_port)
    sweeper = asyncio.create_task(housekeeping(core, metrics))
    log.info("registry listening", extra={"port": running.port, "metrics_port": metrics_port})

    async def stop() -> None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await running.stop()

    await wait_for_stop_signal(stop)
