"""No provider message can break the `Dispatches` stream other requests share (issue 19):
the real dispatcher servicer and driver behind a real grpc.aio server on port 0 (our
message limits), the gateway's real `DispatchMux` on one stream, scripted providers.

One provider floods a dispatch step with maximal chunks (together far over the gRPC message
limit), another sends one chunk larger than a message may be, and an honest provider's
request rides the same stream meanwhile: the flood arrives whole, split over messages under
the budget; the oversized chunk fails its own request (in band, the provider charged); the
honest request completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from contract import dispatcher_pb2, dispatcher_pb2_grpc
from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.dispatch.driver import Dispatcher
from dispatcher_svc.dispatch.metrics import DispatchMetrics
from dispatcher_svc.link import LinkChunk
from dispatcher_svc.registry_client import Reservation
from dispatcher_svc.servicer import DispatcherServicer, DispatchSession
from gateway.mux import DispatchMux, MuxCall
from svckit.auth import ServiceAuth
from svckit.grpcserver import CHANNEL_OPTIONS, MAX_MESSAGE_BYTES, start_grpc
from tests.fakes.driver_ports import CONTENT, DONE, FakeLinks, FakeRegistry

pytestmark = pytest.mark.timeout(60)

BUDGET = 1024 * 1024  # HEDGEROW_DISPATCH_MESSAGE_BYTES' default
MAXIMAL = b"x" * (BUDGET - 256)  # the largest chunk a provider may send, near enough
FLOOD = MAX_MESSAGE_BYTES // len(MAXIMAL) + 2  # together over the gRPC message limit


class ByModel(FakeRegistry):
    """Grants each request the provider named by its model."""

    async def reserve(self, **kwargs: Any) -> Reservation:
        provider = kwargs["model"]
        return Reservation(f"r-{provider}", provider, "1.0", 0.0)


@dataclass
class Stack:
    mux: DispatchMux
    registry: ByModel
    sent: list[dispatcher_pb2.DispatchOut]


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    links = FakeLinks(
        {
            "flood": [LinkChunk(CONTENT), *[LinkChunk(MAXIMAL)] * FLOOD, DONE],
            "oversized": [LinkChunk(CONTENT), LinkChunk(b"z" * (BUDGET + 1)), DONE],
            "honest": [LinkChunk(CONTENT), LinkChunk(CONTENT), DONE],
        }
    )
    registry = ByModel([])
    config = DispatcherConfig(dispatch_message_bytes=BUDGET)
    dispatcher = Dispatcher(config, links, registry, DispatchMetrics(CollectorRegistry()))
    sent: list[dispatcher_pb2.DispatchOut] = []

    class RecordingSession(DispatchSession):
        async def write(self, message: dispatcher_pb2.DispatchOut) -> None:
            sent.append(message)
            await super().write(message)

    class Recording(DispatcherServicer):
        async def Dispatches(self, request_iterator: object, context: Any) -> None:
            await RecordingSession(dispatcher, context).serve()

    servicer = Recording(dispatcher)
    running = await start_grpc(
        lambda s: dispatcher_pb2_grpc.add_DispatcherServicer_to_server(servicer, s),
        [],
        host="127.0.0.1",
        port=0,
        auth=ServiceAuth(),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=CHANNEL_OPTIONS)
    mux = DispatchMux(dispatcher_pb2_grpc.DispatcherStub(channel))
    yield Stack(mux, registry, sent)
    await mux.aclose()
    await channel.close()
    await running.stop(0)


async def read_all(call: MuxCall) -> list[dispatcher_pb2.DispatchEvent]:
    events: list[dispatcher_pb2.DispatchEvent] = []
    while (batch := await call.read()) is not None:
        events.extend(batch.events)
    return events


def kinds(events: list[dispatcher_pb2.DispatchEvent]) -> list[str | None]:
    return [e.WhichOneof("event") for e in events]


async def test_isolation_maximal_chunks_never_break_the_shared_stream(stack: Stack) -> None:
    calls = [
        await stack.mux.start(dispatcher_pb2.DispatchRequest(request_id=m, model=m, body=b"{}"))
        for m in ("flood", "oversized", "honest")
    ]
    async with asyncio.timeout(30):
        flood, oversized, honest = await asyncio.gather(*(read_all(c) for c in calls))

    # The honest request on the same stream completes, whatever the others sent.
    assert kinds(honest) == ["committed", "chunks", "chunks", "completed"]
    # The flood arrives whole and in order, over as many messages as it takes.
    delivered = [c for e in flood for c in e.chunks.chunks]
    assert delivered == [CONTENT, *[MAXIMAL] * FLOOD]
    assert kinds(flood)[0] == "committed" and kinds(flood)[-1] == "completed"
    # One chunk over a message's budget fails its own request, in band; the provider pays.
    assert kinds(oversized) == ["committed", "chunks", "stream_error"]
    assert oversized[-1].stream_error.status == 502
    assert ("r-oversized", 502) in stack.registry.released
    assert {("r-flood", 200), ("r-honest", 200)} <= set(stack.registry.released)
    # Every message stayed within the budget (a lone maximal chunk plus its envelope).
    assert max(m.ByteSize() for m in stack.sent) <= BUDGET
    assert sum(1 for m in stack.sent if m.call_id == calls[0].call_id) > FLOOD // 2
