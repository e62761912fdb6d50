"""The request multiplexer (`svckit.rpcmux`) on fake streams, no sockets: call ids, routing,
the last answer, cancel, the write discipline, failing every call when a stream ends,
reopening, and the server side's tasks and cleanup. M1-M9 are the guarantees listed in
docs/multiplexer.md; the last tests pin the two protocol adapters built on it."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from contract import dispatcher_pb2, dispatcher_pb2_grpc, registry_pb2
from contract import hedgerow_common_pb2 as common_pb2
from contract.slots import RELEASE_CANCELLED as CANCELLED
from dispatcher_svc.registry_client import GrpcRegistry, NoReservation
from gateway.mux import DispatcherUnavailable, DispatchMux
from svckit.rpcmux import StreamingCall, StreamingMux, StreamSession, UnaryMux

pytestmark = pytest.mark.timeout(10)  # a broken mux tends to hang rather than fail


@dataclass
class Msg:
    call_id: int = 0
    body: str = ""
    last: bool = False
    cancel: bool = False


class Gone(Exception):
    pass


async def settle() -> None:
    """Let every task that can run, run (a background write takes a few turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def ended(task: asyncio.Task[None]) -> None:
    """`task` ends by itself, promptly (waited for without cancelling it)."""
    await asyncio.wait({task}, timeout=1)
    assert task.done(), "still running"
    task.result()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds (bounded: a bug fails, never hangs)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


class FakeStream:
    """A grpc.aio bidi call: writes land in `written` (held while `gate` is clear);
    `answer()` makes the peer say something, `end()` close, `break_()` fail."""

    def __init__(self) -> None:
        self.written: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.cut = False  # a write was cancelled half-way: grpc.aio would cancel the call
        self.cancelled = False
        self._answers: asyncio.Queue[Any] = asyncio.Queue()

    async def write(self, message: Any) -> None:
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cut = True
            raise
        if self.cancelled:
            raise grpc.aio.UsageError("call cancelled")
        self.written.append(message)

    async def read(self) -> Any:
        item = await self._answers.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        self._answers.put_nowait(asyncio.CancelledError())  # what grpc.aio's read raises
        return True

    def answer(self, *messages: Any) -> None:
        for message in messages:
            self._answers.put_nowait(message)

    def end(self) -> None:
        self._answers.put_nowait(grpc.aio.EOF)

    def break_(self) -> None:
        md = grpc.aio.Metadata()
        self._answers.put_nowait(grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, md, md))


class Peer:
    """Opens a new FakeStream per call of `open`, like a stub's bidi method; `gated`: each
    one's writes wait until its gate is set."""

    def __init__(self, *, gated: bool = False) -> None:
        self.streams: list[FakeStream] = []
        self.gated = gated

    def open(self) -> FakeStream:
        self.streams.append(FakeStream())
        if self.gated:
            self.streams[-1].gate.clear()
        return self.streams[-1]

    @property
    def stream(self) -> FakeStream:
        return self.streams[-1]


class Call(StreamingCall[Msg, Msg, str]):
    def _is_last(self, answer: Msg) -> bool:
        return answer.last

    def _cancel_message(self) -> Msg:
        return Msg(self.call_id, cancel=True)

    def _payload(self, answer: Msg) -> str:
        return answer.body


def streaming(peer: Peer) -> StreamingMux[Msg, Msg, Call]:
    return StreamingMux("test", peer.open, Gone, Call)


def unary(peer: Peer) -> UnaryMux[Msg, Msg]:
    return UnaryMux("test", peer.open, Gone)


# --- client side ------------------------------------------------------------------------


async def test_m1_each_call_gets_a_new_id_stamped_into_its_first_message() -> None:
    peer = Peer()
    mux = streaming(peer)
    calls = [await mux.start(Msg(body=f"start {i}")) for i in range(3)]
    assert [c.call_id for c in calls] == [1, 2, 3]
    await until(lambda: len(peer.stream.written) == 3)
    assert [(m.call_id, m.body) for m in peer.stream.written] == [
        (1, "start 0"),
        (2, "start 1"),
        (3, "start 2"),
    ]
    assert len(peer.streams) == 1, "every call rides the one stream"
    await mux.aclose()


async def test_m2_answers_reach_their_own_call_whatever_the_interleaving() -> None:
    peer = Peer()
    mux = streaming(peer)
    a, b, c = [await mux.start(Msg()) for _ in range(3)]
    peer.stream.answer(
        Msg(2, "b1"), Msg(1, "a1"), Msg(3, "c1"), Msg(1, "a2", last=True), Msg(3, "c2", last=True)
    )
    peer.stream.answer(Msg(2, "b2", last=True))

    async def drain(call: Call) -> list[str]:
        out = []
        while (body := await call.read()) is not None:
            out.append(body)
        return out

    assert list(await asyncio.gather(drain(a), drain(b), drain(c))) == [
        ["a1", "a2"],
        ["b1", "b2"],
        ["c1", "c2"],
    ]
    await mux.aclose()


async def test_m3_the_last_answer_ends_the_call_and_later_ones_are_dropped() -> None:
    peer = Peer()
    mux = streaming(peer)
    call, other = await mux.start(Msg()), await mux.start(Msg())
    peer.stream.answer(Msg(1, "done", last=True), Msg(1, "late"), Msg(2, "still here"))
    assert await call.read() == "done"
    assert await other.read() == "still here", "a dropped answer does not stop the reader"
    assert await call.read() is None
    call.cancel()  # over: nothing to tell the peer
    await settle()
    assert [m.cancel for m in peer.stream.written] == [False, False]
    await mux.aclose()


async def test_m4_cancel_tells_the_peer_once_and_leaves_the_other_calls() -> None:
    peer = Peer()
    mux = streaming(peer)
    gone, kept = await mux.start(Msg()), await mux.start(Msg())
    gone.cancel()
    gone.cancel()
    await until(lambda: len(peer.stream.written) == 3)
    await settle()
    assert peer.stream.written[2] == Msg(1, cancel=True)
    assert len(peer.stream.written) == 3, "one cancel message, however often it is cancelled"
    peer.stream.answer(Msg(1, "for the cancelled"), Msg(2, "for the kept", last=True))
    assert await kept.read() == "for the kept"
    assert await gone.read() is None
    await mux.aclose()


async def test_m4_a_call_whose_stream_ended_is_not_cancelled_on_the_next_stream() -> None:
    peer = Peer()
    mux = streaming(peer)
    old = await mux.start(Msg())
    peer.stream.end()
    await until(lambda: not mux.is_open)
    new = await mux.start(Msg())
    old.cancel()  # its stream (and the call with it) is gone: nobody to tell
    await settle()
    assert len(peer.streams) == 2
    assert peer.streams[1].written == [Msg(new.call_id)]
    await mux.aclose()


async def test_m5_a_cancelled_start_goes_out_whole_then_its_cancel() -> None:
    peer = Peer()
    mux = streaming(peer)
    await mux.start(Msg(body="open"))
    peer.stream.gate.clear()  # flow control: the next write waits
    starting = asyncio.create_task(mux.start(Msg(body="cut?")))
    await until(lambda: len(mux._calls) == 2)
    await asyncio.sleep(0)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    peer.stream.gate.set()
    await until(lambda: len(peer.stream.written) == 3)
    assert peer.stream.written[1:] == [Msg(2, "cut?"), Msg(2, cancel=True)]
    assert not peer.stream.cut and not peer.stream.cancelled
    await mux.start(Msg(body="after"))
    assert len(peer.streams) == 1, "the shared stream survived"
    await mux.aclose()


async def test_m5_a_cancelled_unary_caller_never_cancels_the_shared_write() -> None:
    peer = Peer(gated=True)
    mux = unary(peer)
    cut = asyncio.create_task(mux.call(Msg(body="reserve"), timeout_s=5))
    waits = asyncio.create_task(mux.call(Msg(body="release"), timeout_s=5))
    await until(lambda: len(mux._calls) == 2)
    await asyncio.sleep(0)
    cut.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cut
    peer.stream.gate.set()
    await until(lambda: len(peer.stream.written) == 2)
    peer.stream.answer(Msg(1, "late, dropped"), Msg(2, "released"))
    assert await waits == Msg(2, "released")
    assert not peer.stream.cut and not peer.stream.cancelled
    await mux.aclose()


@pytest.mark.parametrize(("how", "reason"), [("end", "ended"), ("break_", "UNAVAILABLE")])
async def test_m6_a_stream_that_ends_fails_every_call_then_the_next_call_reopens(
    how: str, reason: str
) -> None:
    peer = Peer()
    mux = streaming(peer)
    calls = [await mux.start(Msg()) for _ in range(3)]
    peer.stream.answer(Msg(2, "first"))
    assert await calls[1].read() == "first"
    getattr(peer.stream, how)()
    for call in calls:
        with pytest.raises(Gone, match=reason):
            await call.read()
        assert await call.read() is None
    assert not mux.is_open
    again = await mux.start(Msg(body="again"))
    assert len(peer.streams) == 2 and mux.is_open
    assert again.call_id == 4, "ids are never reused, not even on a new stream"
    peer.stream.answer(Msg(4, "works", last=True))
    assert await again.read() == "works"
    await mux.aclose()


async def test_m6_unary_calls_fail_at_once_when_the_stream_breaks_then_reopen() -> None:
    peer = Peer()
    mux = unary(peer)
    pending = [asyncio.create_task(mux.call(Msg(), timeout_s=5)) for _ in range(3)]
    await until(lambda: len(peer.streams) == 1 and len(peer.stream.written) == 3)
    peer.stream.break_()
    for task in pending:
        with pytest.raises(Gone, match="test stream broke: UNAVAILABLE"):
            await task
    answered = asyncio.create_task(mux.call(Msg(), timeout_s=5))
    await until(lambda: len(peer.streams) == 2 and len(peer.stream.written) == 1)
    peer.stream.answer(Msg(4, "ok"))
    assert await answered == Msg(4, "ok")
    await mux.aclose()


async def test_m9_a_unary_call_times_out_and_its_late_answer_is_dropped() -> None:
    peer = Peer()
    mux = unary(peer)
    with pytest.raises(Gone, match=r"no answer on the test stream within 0\.01 s"):
        await mux.call(Msg(), timeout_s=0.01)
    assert mux._calls == {}, "a call that timed out is forgotten"
    later = asyncio.create_task(mux.call(Msg(), timeout_s=5))
    await until(lambda: len(peer.stream.written) == 2)
    peer.stream.answer(Msg(1, "late"), Msg(2, "on time"))
    assert await later == Msg(2, "on time")
    await mux.aclose()


async def test_m9_an_answer_racing_its_callers_cancellation_is_dropped() -> None:
    """The answer is read in the same loop turn as its caller is cancelled: the call's
    future is already cancelled, not yet forgotten. Setting it would kill the reader."""
    peer = Peer()
    mux = unary(peer)
    caller = asyncio.create_task(mux.call(Msg(), timeout_s=5))
    other = asyncio.create_task(mux.call(Msg(), timeout_s=5))
    await until(lambda: len(peer.streams) == 1 and len(peer.stream.written) == 2)
    for _ in range(10):
        await asyncio.sleep(0)  # both callers now wait on their answers
    peer.stream.answer(Msg(1, "racing"))  # the reader wakes first...
    caller.cancel()  # ...then the caller, whose future is cancelled now
    with pytest.raises(asyncio.CancelledError):
        await caller
    peer.stream.answer(Msg(2, "fine"))
    assert await other == Msg(2, "fine")
    await mux.aclose()


async def test_a_closed_mux_fails_its_calls_and_every_later_one() -> None:
    peer = Peer()
    streams, calls = streaming(peer), unary(peer)
    in_flight = await streams.start(Msg())
    waiting = asyncio.create_task(calls.call(Msg(), timeout_s=5))
    await until(lambda: len(peer.streams) == 2)
    await streams.aclose()
    await calls.aclose()
    with pytest.raises(Gone):
        await in_flight.read()
    with pytest.raises(Gone):
        await waiting
    with pytest.raises(Gone, match="closed"):
        await calls.call(Msg(), timeout_s=5)
    with pytest.raises(Gone, match="closed"):
        await (await streams.start(Msg())).read()
    assert len(peer.streams) == 2, "nothing reopened"


# --- server side ------------------------------------------------------------------------


class FakeContext:
    """A grpc.aio servicer context: `say()` what the client sends, `close()` its side."""

    def __init__(self) -> None:
        self.written: list[Any] = []
        self.fail_writes = False
        self._inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def send_initial_metadata(self, _metadata: Any) -> None:
        return None

    async def read(self) -> Any:
        return await self._inbox.get()

    async def write(self, message: Any) -> None:
        await asyncio.sleep(0)
        if self.fail_writes:
            raise grpc.aio.UsageError("the stream is gone")
        self.written.append(message)

    def say(self, *messages: Msg) -> None:
        for message in messages:
            self._inbox.put_nowait(message)

    def close(self) -> None:
        self._inbox.put_nowait(grpc.aio.EOF)


class Session(StreamSession[Msg]):
    """Each call writes its body's parts, then holds until cancelled (body "quick": ends)."""

    def __init__(self, context: FakeContext) -> None:
        super().__init__(context)
        self.cancelled: list[int] = []
        self.running_at_end: list[Any] | None = None

    async def on_message(self, message: Msg) -> None:
        if message.cancel:
            self.cancel(message.call_id)
        else:
            self.spawn(message.call_id, self._run(message))

    async def _run(self, message: Msg) -> None:
        try:
            await self.write(Msg(message.call_id, message.body))
            if message.body != "quick":
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(message.call_id)
            raise

    async def on_end(self) -> None:
        self.running_at_end = [key for key, task in self._calls.items() if not task.done()]


async def serving(session: Session) -> asyncio.Task[None]:
    task = asyncio.create_task(session.serve())
    await asyncio.sleep(0)
    return task


async def test_m4_the_server_runs_a_task_per_call_and_cancels_only_the_one_named() -> None:
    context = FakeContext()
    session = Session(context)
    serve = await serving(session)
    context.say(Msg(1, "one"), Msg(2, "two"))
    await until(lambda: len(context.written) == 2)
    context.say(Msg(1, cancel=True))
    await until(lambda: session.cancelled == [1])
    assert [m.body for m in context.written] == ["one", "two"]
    assert not session._calls[2].done(), "the other call runs on"
    context.close()
    await serve
    assert session.cancelled == [1, 2]


async def test_m1_a_repeated_call_id_is_refused_and_the_first_call_keeps_it() -> None:
    context = FakeContext()
    session = Session(context)
    assert session.spawn(7, session._run(Msg(7, "first"))) is True
    await until(lambda: len(context.written) == 1)
    second = session._run(Msg(7, "duplicate"))
    assert session.spawn(7, second) is False
    assert inspect.getcoroutinestate(second) == inspect.CORO_CLOSED, "closed, never run"
    session.cancel(7)
    await asyncio.gather(*session._calls.values(), return_exceptions=True)
    assert [m.body for m in context.written] == ["first"]


async def test_m7_stream_end_cancels_every_call_before_the_cleanup_hook() -> None:
    context = FakeContext()
    session = Session(context)
    serve = await serving(session)
    context.say(Msg(1, "a"), Msg(2, "b"), Msg(3, "quick"))
    await until(lambda: len(context.written) == 3 and 3 not in session._calls)
    context.close()
    await serve
    assert sorted(session.cancelled) == [1, 2]
    assert session.running_at_end == [], "cleanup runs once every call task is done"


async def test_m8_a_server_stream_that_cannot_write_ends() -> None:
    context = FakeContext()
    session = Session(context)
    serve = await serving(session)
    context.say(Msg(1, "held"))
    await until(lambda: len(context.written) == 1)
    context.fail_writes = True
    context.say(Msg(2, "lost"))
    await ended(serve)  # returns: the peer sees the stream end, not an error
    assert sorted(session.cancelled) == [1, 2]
    assert session.running_at_end == []


async def test_m8_a_write_failing_while_the_stream_ends_does_not_cut_the_cleanup() -> None:
    """The cleanup hook may wait on calls that answer as they go (a grant written late);
    such a write failing must not cancel the cleanup: the registry's releases are in it."""
    context = FakeContext()
    cleaned: list[bool] = []

    class LateWriter(Session):
        async def on_end(self) -> None:
            await self.write(Msg(9, "late grant"))
            await asyncio.sleep(0)
            cleaned.append(True)

    session = LateWriter(context)
    serve = await serving(session)
    context.fail_writes = True
    context.close()
    await ended(serve)
    assert cleaned == [True]


async def test_an_outside_cancellation_cleans_up_and_stays_a_cancellation() -> None:
    context = FakeContext()
    session = Session(context)
    serve = await serving(session)
    context.say(Msg(1, "a"))
    await until(lambda: len(context.written) == 1)
    serve.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serve
    assert session.cancelled == [1] and session.running_at_end == []


# --- the protocol adapters --------------------------------------------------------------


class FakeChannel:
    """Enough of a grpc.aio channel for a stub: its bidi methods open FakeStreams."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def unary_unary(self, *_: Any, **__: Any) -> Any:
        return None

    def stream_stream(self, *_: Any, **__: Any) -> Any:
        return self.peer.open


async def test_dispatches_carry_start_events_end_and_cancel_as_the_proto_says() -> None:
    peer = Peer()
    mux = DispatchMux(dispatcher_pb2_grpc.DispatcherStub(FakeChannel(peer)))
    request = dispatcher_pb2.DispatchRequest(request_id="r1", model="m")
    done, cancelled, broken = [await mux.start(request) for _ in range(3)]
    await until(lambda: len(peer.stream.written) == 3)
    assert peer.stream.written[0] == dispatcher_pb2.DispatchCall(call_id=1, start=request)
    chunks = dispatcher_pb2.DispatchEvent(chunks=dispatcher_pb2.Chunks(chunks=[b"{}"]))
    events = dispatcher_pb2.DispatchEvents(events=[chunks])
    peer.stream.answer(
        dispatcher_pb2.DispatchOut(call_id=1, events=events),
        dispatcher_pb2.DispatchOut(call_id=1, events=events, end=True),
    )
    assert await done.read() == events
    assert await done.read() == events, "the last message's events are read too"
    assert await done.read() is None
    cancelled.cancel()
    await until(lambda: len(peer.stream.written) == 4)
    assert peer.stream.written[3] == dispatcher_pb2.DispatchCall(call_id=2, cancel=True)
    peer.stream.break_()
    with pytest.raises(DispatcherUnavailable, match="dispatches stream broke"):
        await broken.read()
    await mux.aclose()


async def test_b12_a_reserve_answered_too_late_is_released_by_name() -> None:
    peer = Peer()
    registry = GrpcRegistry(FakeChannel(peer), rpc_timeout_s=0.05)
    with pytest.raises(NoReservation) as late:
        await registry.reserve(
            model="m",
            traits=common_pb2.Traits(),
            exclude=(),
            avoid_version="",
            allowlist=(),
            prompt_tokens=1,
            max_tokens=8,
            may_queue=True,
            timeout_s=0.0,
            reservation_id="r-late",
        )
    assert late.value.http_status == 503
    await until(lambda: len(peer.stream.written) == 2)
    release = peer.stream.written[1]
    assert release.WhichOneof("call") == "release"
    assert (release.release.reservation_id, release.release.status_code) == ("r-late", CANCELLED)
    grant = registry_pb2.ReserveReply(reservation_id="r-late", provider_id="p1")
    peer.stream.answer(
        registry_pb2.SlotAnswer(call_id=1, reserved=grant),  # the late grant: dropped
        registry_pb2.SlotAnswer(call_id=2, released=registry_pb2.ReleaseReply(released=True)),
    )
    await registry.aclose()
