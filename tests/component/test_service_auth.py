"""The internal gRPC surface is authenticated (threat model, rule F10): every call but the
health check needs the shared service token; reflection is off unless asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from contract import registry_pb2, registry_pb2_grpc
from registry_svc import server as registry_server
from registry_svc.config import RegistryConfig
from svckit.auth import ServiceAuth, aio_channel
from svckit.grpcserver import CHANNEL_OPTIONS, RunningServer

TOKEN = "a-test-service-token-of-some-length"


@pytest.fixture
async def registry() -> AsyncIterator[RunningServer]:
    config = RegistryConfig(port=0, auth=ServiceAuth(token=TOKEN))
    running = await registry_server.start(config, registry_server.build_registry(config))
    try:
        yield running
    finally:
        await running.stop(0)


def target(running: RunningServer) -> str:
    return f"127.0.0.1:{running.port}"


async def test_f10_a_call_without_the_token_is_refused(registry: RunningServer) -> None:
    for auth in (ServiceAuth(), ServiceAuth(token="wrong-token-wrong-token")):
        async with aio_channel(target(registry), auth, CHANNEL_OPTIONS) as channel:
            stub = registry_pb2_grpc.RegistryStub(channel)
            upsert = registry_pb2.UpsertProviderRequest(
                provider=registry_pb2.ProviderInfo(id="intruder", trusted=True)
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.UpsertProvider(upsert, timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # The stream every dispatch's slots travel on is closed to it as well.
            slots = stub.Slots()
            await slots.write(registry_pb2.SlotCall(call_id=1))
            with pytest.raises(grpc.aio.AioRpcError) as stream_refused:
                await slots.read()
            assert stream_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Nothing got in.
    async with aio_channel(target(registry), ServiceAuth(token=TOKEN), CHANNEL_OPTIONS) as ok:
        stats = await registry_pb2_grpc.RegistryStub(ok).Stats(
            registry_pb2.StatsRequest(), timeout=5
        )
    assert "intruder" not in stats.online_provider_ids and stats.providers_online == 0


async def test_f10_a_call_with_the_token_is_served(registry: RunningServer) -> None:
    async with aio_channel(target(registry), ServiceAuth(token=TOKEN), CHANNEL_OPTIONS) as ch:
        stub = registry_pb2_grpc.RegistryStub(ch)
        await stub.UpsertProvider(
            registry_pb2.UpsertProviderRequest(
                provider=registry_pb2.ProviderInfo(id="p1", version="1.0", trusted=True)
            ),
            timeout=5,
        )
        stats = await stub.Stats(registry_pb2.StatsRequest(), timeout=5)
    assert list(stats.online_provider_ids) == ["p1"]


async def test_f10_health_stays_open_and_reflection_is_off(registry: RunningServer) -> None:
    async with grpc.aio.insecure_channel(target(registry)) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as off:
            async for _ in stream:
                pass
        assert off.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED)


async def test_f10_reflection_when_asked_for() -> None:
    config = RegistryConfig(port=0, auth=ServiceAuth(token=TOKEN, reflection=True))
    running = await registry_server.start(config, registry_server.build_registry(config))
    try:
        async with aio_channel(target(running), ServiceAuth(token=TOKEN), ()) as channel:
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            names = [s.name async for reply in stream for s in reply.list_services_response.service]
        assert registry_server.SERVICE_NAME in names
    finally:
        await running.stop(0)
