"""The request multiplexer over real gRPC on 127.0.0.1, port 0 (M2, M4, M6, M7 of
docs/multiplexer.md; B12).

Two servers: the real dispatcher servicer (`DispatchSession`) in front of a fake dispatcher,
driven through the gateway's real `DispatchMux`; and a minimal generic handler whose session
answers each call after the delay it asks for, driven through a bare `UnaryMux`. Many calls
interleave on one stream, cancelling one leaves the others, and a server that dies fails
every call in flight at once; the next call opens a new stream.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest

from contract import dispatcher_pb2, dispatcher_pb2_grpc, registry_pb2
from dispatcher_svc.servicer import DispatcherServicer
from gateway.mux import DispatcherUnavailable, DispatchMux, MuxCall
from svckit.grpcserver import CHANNEL_OPTIONS
from svckit.rpcmux import StreamSession, UnaryMux

pytestmark = pytest.mark.timeout(60)

DEvent = dispatcher_pb2.DispatchEvent
COMMITTED = DEvent(committed=dispatcher_pb2.Committed(provider_id="p1"))
COMPLETED = DEvent(completed=dispatcher_pb2.Completed())


def chunk(text: str) -> DEvent:
    return DEvent(chunks=dispatcher_pb2.Chunks(chunks=[text.encode()]))


@dataclass
class FakeDispatcher:
    """`dispatch()` as the driver's: model "count" yields `max_tokens` chunks named after
    the request then Completed; model "hold" yields Committed, then waits for its gate.
    `closed` lists the dispatches closed before their end (cancelled: slots released)."""

    yielded: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    streams: int = 0
    max_message_bytes: int = 1024 * 1024  # the servicer's budget per message

    async def dispatch(
        self, request: dispatcher_pb2.DispatchRequest
    ) -> AsyncGenerator[list[DEvent], None]:
        rid, over = request.request_id, False
        try:
            if request.model == "hold":
                yield [COMMITTED]
                await self.gates.setdefault(rid, asyncio.Event()).wait()
            else:
                for i in range(request.max_tokens):
                    self.yielded.append(rid)
                    yield [chunk(f"{rid}:{i}")]
            yield [COMPLETED]
            over = True
        finally:
            if not over:
                self.closed.append(rid)


class CountingServicer(DispatcherServicer):
    def __init__(self, fake: FakeDispatcher) -> None:
        super().__init__(cast(Any, fake))  # only its dispatch() is used
        self.fake = fake

    async def Dispatches(self, request_iterator: object, context: Any) -> None:
        self.fake.streams += 1
        await super().Dispatches(request_iterator, context)


async def serve(register: Any, port: int = 0) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    register(server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound


@dataclass
class DispatchSide:
    fake: FakeDispatcher
    server: grpc.aio.Server
    port: int
    mux: DispatchMux
    channel: grpc.aio.Channel

    async def restart(self) -> None:
        servicer = CountingServicer(self.fake)
        self.server, _ = await serve(
            lambda s: dispatcher_pb2_grpc.add_DispatcherServicer_to_server(servicer, s), self.port
        )


@pytest.fixture
async def side() -> AsyncIterator[DispatchSide]:
    fake = FakeDispatcher()
    servicer = CountingServicer(fake)
    server, port = await serve(
        lambda s: dispatcher_pb2_grpc.add_DispatcherServicer_to_server(servicer, s)
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    mux = DispatchMux(dispatcher_pb2_grpc.DispatcherStub(channel))
    running = DispatchSide(fake, server, port, mux, channel)
    yield running
    await mux.aclose()
    await channel.close()
    await running.server.stop(0)


def request(rid: str, model: str = "hold", count: int = 0) -> dispatcher_pb2.DispatchRequest:
    return dispatcher_pb2.DispatchRequest(request_id=rid, model=model, max_tokens=count)


async def drain(call: MuxCall) -> list[DEvent]:
    events: list[DEvent] = []
    while (batch := await call.read()) is not None:
        events.extend(batch.events)
    return events


async def until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_m2_many_dispatches_interleave_on_one_stream_each_gets_its_own(
    side: DispatchSide,
) -> None:
    counts = {f"r{i}": 3 + i % 7 for i in range(64)}
    calls = await asyncio.gather(
        *(side.mux.start(request(r, "count", n)) for r, n in counts.items())
    )
    results = await asyncio.gather(*(drain(call) for call in calls))
    for (rid, n), events in zip(counts.items(), results, strict=True):
        assert events == [chunk(f"{rid}:{i}") for i in range(n)] + [COMPLETED]
    assert side.fake.streams == 1, "every dispatch rode the one stream"
    switches = sum(a != b for a, b in itertools.pairwise(side.fake.yielded))
    assert switches > len(counts), "the dispatches ran interleaved, not one after another"


async def test_b12_cancelling_one_dispatch_stops_it_alone(side: DispatchSide) -> None:
    calls = [await side.mux.start(request(f"h{i}")) for i in range(3)]
    for call in calls:
        assert list((await call.read() or dispatcher_pb2.DispatchEvents()).events) == [COMMITTED]
    calls[1].cancel()
    await until(lambda: side.fake.closed == ["h1"])
    assert await calls[1].read() is None
    for rid in ("h0", "h2"):
        side.fake.gates[rid].set()
    assert await drain(calls[0]) == [COMPLETED]
    assert await drain(calls[2]) == [COMPLETED]
    assert side.fake.closed == ["h1"]


async def test_m6_m7_a_dead_dispatcher_fails_every_dispatch_at_once_then_the_stream_reopens(
    side: DispatchSide,
) -> None:
    calls = [await side.mux.start(request(f"d{i}")) for i in range(5)]
    for call in calls:
        await call.read()  # committed: every dispatch is under way
    await side.server.stop(0)
    async with asyncio.timeout(2):  # promptly, far sooner than any request timeout
        for call in calls:
            with pytest.raises(DispatcherUnavailable):
                await call.read()
    await until(lambda: sorted(side.fake.closed) == [f"d{i}" for i in range(5)])  # B12
    await side.restart()
    for attempt in range(100):  # the channel reconnects with a short backoff
        call = await side.mux.start(request(f"after-{attempt}", "count", 2))
        try:
            assert len(await drain(call)) == 3
            break
        except DispatcherUnavailable:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the mux never reached the restarted dispatcher")
    assert side.fake.streams == 2


# --- a bare UnaryMux against a generic handler ------------------------------------------

SERVICE, METHOD = "hedgerow.test.Echo", "Calls"


class EchoSession(StreamSession[registry_pb2.SlotCall]):
    """Answers each call with its own reservation id after `timeout_s` seconds, in a task
    of its own: answers go out in whatever order the delays make."""

    async def on_message(self, message: registry_pb2.SlotCall) -> None:
        self.spawn(message.call_id, self._answer(message))

    async def _answer(self, call: registry_pb2.SlotCall) -> None:
        await asyncio.sleep(call.timeout_s)
        reply = registry_pb2.ReserveReply(reservation_id=call.reserve.reservation_id)
        await self.write(registry_pb2.SlotAnswer(call_id=call.call_id, reserved=reply))


def register_echo(server: grpc.aio.Server) -> None:
    async def calls(_requests: object, context: Any) -> None:
        await EchoSession(context).serve()

    handler = grpc.stream_stream_rpc_method_handler(
        calls,
        request_deserializer=registry_pb2.SlotCall.FromString,
        response_serializer=registry_pb2.SlotAnswer.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
    )


class Gone(Exception):
    pass


Echo = UnaryMux[registry_pb2.SlotCall, registry_pb2.SlotAnswer]


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, grpc.aio.Server, int]]:
    server, port = await serve(register_echo)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    open_call = channel.stream_stream(
        f"/{SERVICE}/{METHOD}",
        request_serializer=registry_pb2.SlotCall.SerializeToString,
        response_deserializer=registry_pb2.SlotAnswer.FromString,
    )
    mux: Echo = UnaryMux("echo", open_call, Gone)
    yield mux, server, port
    await mux.aclose()
    await channel.close()
    await server.stop(0)


def ask(name: str, delay_s: float) -> registry_pb2.SlotCall:
    return registry_pb2.SlotCall(
        reserve=registry_pb2.ReserveRequest(reservation_id=name), timeout_s=delay_s
    )


async def answer_of(mux: Echo, name: str, delay_s: float) -> str:
    return (await mux.call(ask(name, delay_s), timeout_s=5)).reserved.reservation_id


async def test_m2_m4_unary_calls_answered_out_of_order_and_one_cancelled(echo: Any) -> None:
    mux, _, _ = echo
    rng = random.Random(5)
    names = [f"n{i}" for i in range(100)]
    tasks = {n: asyncio.create_task(answer_of(mux, n, rng.uniform(0, 0.05))) for n in names}
    await asyncio.sleep(0.01)
    tasks["n7"].cancel()  # its answer will come, late: dropped
    results = await asyncio.gather(*tasks.values(), return_exceptions=True)
    for name, result in zip(names, results, strict=True):
        if name == "n7":
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == name
    assert await answer_of(mux, "after", 0) == "after", "the stream lives on"


async def test_m6_a_dead_server_fails_every_call_promptly_then_the_next_call_reopens(
    echo: Any,
) -> None:
    mux, server, port = echo
    pending = [asyncio.create_task(answer_of(mux, f"p{i}", 30)) for i in range(10)]
    await asyncio.sleep(0.1)
    await server.stop(0)
    async with asyncio.timeout(2):  # the calls asked for 30 s: they fail because the stream did
        for task in pending:
            with pytest.raises(Gone, match="echo stream broke"):
                await task
    server, _ = await serve(register_echo, port)
    try:
        for _ in range(100):
            try:
                assert await answer_of(mux, "again", 0) == "again"
                break
            except Gone:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the mux never reached the restarted server")
    finally:
        await server.stop(0)
