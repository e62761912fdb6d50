"""Each gRPC service, started in-process on port 0, answers its health check."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from dispatcher_svc import server as dispatcher_server
from dispatcher_svc.config import DispatcherConfig
from normalizer_svc import server as normalizer_server
from normalizer_svc.config import NormalizerConfig
from registry_svc import server as registry_server
from registry_svc.config import RegistryConfig


async def check(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(reply.status)


async def test_normalizer_health() -> None:
    running = await normalizer_server.start(NormalizerConfig(port=0), CollectorRegistry())
    try:
        assert await check(running.port, "") == health_pb2.HealthCheckResponse.SERVING
        assert await check(running.port, normalizer_server.SERVICE_NAME) == 1
    finally:
        await running.stop(0)


async def test_registry_health() -> None:
    config = RegistryConfig(port=0)
    running = await registry_server.start(config, registry_server.build_registry(config))
    try:
        assert await check(running.port, registry_server.SERVICE_NAME) == 1
    finally:
        await running.stop(0)


async def test_dispatcher_health() -> None:
    config = DispatcherConfig(port=0, link_port=0, registry_addr="127.0.0.1:1")
    runtime = await dispatcher_server.start(config, CollectorRegistry())
    try:
        assert runtime.link_port > 0
        assert await check(runtime.rpc.port, dispatcher_server.SERVICE_NAME) == 1
    finally:
        await runtime.stop()


async def test_unknown_service_is_not_found() -> None:
    running = await normalizer_server.start(NormalizerConfig(port=0), CollectorRegistry())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await check(running.port, "no.such.Service")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await running.stop(0)
