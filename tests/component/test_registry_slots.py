"""Reserve and Release over the registry's `Slots` stream, through the dispatcher's real
client (`GrpcRegistry`) and a real registry gRPC server on port 0 (C5, C6, B12).

The stream is what every request's admission rides on (there are no unary Reserve or
Release calls), so these pin that refusals keep their HTTP status, code and retry-after; a
Release cancels a Reserve still waiting in the queue; and what a dead dispatcher held is
given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2, registry_pb2_grpc
from dispatcher_svc.registry_client import GrpcRegistry, NoReservation
from registry_svc import server as registry_server
from registry_svc.config import RegistryConfig
from registry_svc.model import Outcome, RegistrySettings
from registry_svc.registry import Registry
from svckit.grpcserver import RunningServer

MODEL = "m"
PLAIN = common_pb2.Traits()


@dataclass
class Running:
    port: int
    stub: registry_pb2_grpc.RegistryStub
    core: Registry
    stop: RunningServer

    async def slots_in_use(self) -> int:
        reply = await self.stub.Stats(registry_pb2.StatsRequest(), timeout=5)
        return int(reply.slots_in_use)

    async def queue_depth(self) -> int:
        reply = await self.stub.Stats(registry_pb2.StatsRequest(), timeout=5)
        return int(reply.queue_depth)

    async def until_queued(self, depth: int) -> None:
        """Poll until the queue holds `depth` waiters (bounded: a bug fails, never hangs)."""
        for _ in range(1000):
            if await self.queue_depth() == depth:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"queue never reached depth {depth}")


async def start_registry(port: int = 0) -> tuple[Running, grpc.aio.Channel]:
    core = Registry(RegistrySettings(), clock=time.monotonic, rng=random.Random(3))
    running = await registry_server.start(RegistryConfig(port=port), core)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = registry_pb2_grpc.RegistryStub(channel)
    info = registry_pb2.ProviderInfo(
        id="p1",
        serial="p1",
        version="0.7.0",
        models=[common_pb2.ModelInfo(id=MODEL, max_concurrency=1)],
        trusted=True,
        decode_tps=50,
        prefill_tps=1000,
    )
    request = registry_pb2.UpsertProviderRequest(provider=info)
    await stub.UpsertProvider(request, timeout=5, wait_for_ready=True)
    return Running(running.port, stub, core, running), channel


@pytest.fixture
async def registry() -> AsyncIterator[Running]:
    running, channel = await start_registry()
    yield running
    await channel.close()
    await running.stop.stop(0)


def client_for(running: Running) -> tuple[GrpcRegistry, grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    return GrpcRegistry(channel, rpc_timeout_s=5.0), channel


async def reserve(
    client: GrpcRegistry, rid: str, *, may_queue: bool = False, timeout_s: float = 5.0
) -> str:
    reservation = await client.reserve(
        model=MODEL,
        traits=PLAIN,
        exclude=(),
        avoid_version="",
        allowlist=(),
        prompt_tokens=1,
        max_tokens=8,
        may_queue=may_queue,
        timeout_s=timeout_s,
        reservation_id=rid,
    )
    return reservation.reservation_id


async def test_reserve_and_release_over_the_stream(registry: Running) -> None:
    client, channel = client_for(registry)
    try:
        rid = await reserve(client, "r1")
        assert rid == "r1"
        assert await registry.slots_in_use() == 1
        assert await client.release("r1", 200) is False  # no cooldown entered
        assert await registry.slots_in_use() == 0
        # Many calls share the one stream, answered by call id whatever their order.
        for i in range(20):
            await reserve(client, f"again-{i}")
            await client.release(f"again-{i}", 200)
        assert await registry.slots_in_use() == 0
    finally:
        await client.aclose()
        await channel.close()


async def test_c6_refusals_keep_their_status_code_and_retry_after(registry: Running) -> None:
    client, channel = client_for(registry)
    try:
        await reserve(client, "holder")
        with pytest.raises(NoReservation) as busy:
            await reserve(client, "second")  # at capacity and may not queue
        assert busy.value.http_status == 429
        assert busy.value.retry_after_s > 0
        with pytest.raises(NoReservation) as unknown:
            await client.reserve(
                model="no-such-model",
                traits=PLAIN,
                exclude=(),
                avoid_version="",
                allowlist=(),
                prompt_tokens=1,
                max_tokens=8,
                may_queue=True,
                timeout_s=5.0,
                reservation_id="x",
            )
        assert (unknown.value.http_status, unknown.value.failure.code) == (404, "model_not_found")
    finally:
        await client.aclose()
        await channel.close()


async def test_c6_a_queued_reserve_is_granted_when_the_slot_frees(registry: Running) -> None:
    client, channel = client_for(registry)
    try:
        await reserve(client, "holder")
        waiting = asyncio.create_task(reserve(client, "queued", may_queue=True))
        await registry.until_queued(1)
        await client.release("holder", 200)
        assert await asyncio.wait_for(waiting, 5) == "queued"
        assert await registry.slots_in_use() == 1
    finally:
        await client.aclose()
        await channel.close()


async def test_b12_release_of_a_waiting_reserve_cancels_it(registry: Running) -> None:
    """The dispatcher aborts a queued Reserve by releasing its id: the waiter leaves the
    queue at once (it must not take the next free slot) and nothing stays held."""
    client, channel = client_for(registry)
    try:
        await reserve(client, "holder")
        waiting = asyncio.create_task(reserve(client, "abandoned", may_queue=True))
        await registry.until_queued(1)
        waiting.cancel()
        await client.release("abandoned", 0)
        assert await registry.queue_depth() == 0
        await client.release("holder", 200)
        assert await registry.slots_in_use() == 0, "the freed slot went to nobody"
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await client.aclose()
        await channel.close()


async def test_b12_a_dead_dispatchers_reservations_are_released(registry: Running) -> None:
    """Reservations are leased to the stream that took them: when the dispatcher goes away
    without releasing (crash, kill -9), its slots come back instead of leaking for good."""
    client, channel = client_for(registry)
    await reserve(client, "held-by-the-dead")
    assert await registry.slots_in_use() == 1
    await client.aclose()
    await channel.close()
    for _ in range(500):
        if await registry.slots_in_use() == 0:
            break
        await asyncio.sleep(0.01)
    assert await registry.slots_in_use() == 0


async def test_calls_fail_clearly_while_the_registry_is_down_then_work_again() -> None:
    running, admin = await start_registry()
    port = running.port
    client, channel = client_for(running)
    try:
        await reserve(client, "before")
        await admin.close()
        await running.stop.stop(0)
        with pytest.raises(NoReservation) as down:
            await reserve(client, "while-down", timeout_s=0.5)
        assert down.value.http_status == 503
        assert await client.release("before", 200) is False  # retried, then given up
        running, admin = await start_registry(port)
        # A new stream on the new server, once the channel has reconnected (its backoff).
        for attempt in range(100):
            try:
                assert await reserve(client, f"after-{attempt}") == f"after-{attempt}"
                break
            except NoReservation as exc:
                assert exc.http_status == 503
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the client never reached the restarted registry")
    finally:
        await client.aclose()
        await channel.close()
        await admin.close()
        await running.stop.stop(0)


async def test_b12_cancelled_reserves_never_break_the_shared_stream(registry: Running) -> None:
    """Reserve tasks are cancelled all the time (a race loser, a client gone). One cancelled
    in the middle of writing its call must not take the stream down: that would release
    every slot the dispatcher still holds and fail every pending call."""
    client, channel = client_for(registry)
    try:
        await reserve(client, "live")
        for i in range(120):
            task = asyncio.create_task(reserve(client, f"cut-{i}"))  # refused: full
            for _ in range(i % 6):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, NoReservation):
                await task
        assert await registry.slots_in_use() == 1, "the live reservation is still held"
        assert registry.core.release("live", Outcome(0)).released
    finally:
        await client.aclose()
        await channel.close()
