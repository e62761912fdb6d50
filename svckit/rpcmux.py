"""The request multiplexer: many calls over one long-lived gRPC bidi stream.

A message on an open stream costs a fraction of a new call, so the gateway runs every
dispatch over one `Dispatches` stream and the dispatcher every Reserve and Release over one
`Slots` stream. What the two have in common lives here, free of any proto:

- `SharedWriter`, the write discipline (below).
- The client side. `ClientMux` opens the stream on first use and again on the first use
  after it ended, numbers the calls, routes each answer to its call by id, drops answers
  for calls it has forgotten, and fails every call in flight when the stream ends.
  `StreamingMux` carries calls answered by a sequence of messages (`StreamingCall`: an
  inbox, a last answer, a cancel); `UnaryMux` calls answered once (a future, a timeout).
- The server side. `StreamSession` reads the stream in order, runs a task per call by key,
  cancels one by key and, however the stream ends, cancels them all and runs a cleanup hook.

The protocol adapters (gateway/mux.py, dispatcher_svc/registry_client.py and servicer.py,
registry_svc/slots.py) add what is proto-specific: the messages, and how a call id, a last
answer and a cancel are written in them. docs/multiplexer.md describes both protocols.

The write discipline: grpc.aio cancels the whole call when the task awaiting `write()` is
cancelled in the middle of it (client side), and a server stream whose first write was
cancelled can never write again. Our streams carry many requests at once, and those
requests' tasks are cancelled all the time (a race loser, a client that left). So every
write runs in a task of its own, shielded from the caller and one at a time: a cancelled
caller stops waiting, its message still goes out whole.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, Protocol, TypeVar

import grpc

log = logging.getLogger(__name__)


class Tagged(Protocol):
    """A message of a multiplexed stream: it names the call it belongs to."""

    call_id: int


M = TypeVar("M")  # what one side writes
T = TypeVar("T", bound=Tagged)  # a client's call message: the mux stamps the call id in
A = TypeVar("A", bound=Tagged)  # an answer to a client: routed by its call id
R = TypeVar("R")  # what a streaming call's reader gets out of each answer
C = TypeVar("C")  # what a client keeps per call in flight
SC = TypeVar("SC", bound="StreamingCall[Any, Any, Any]")

# What a write raises on a stream that is ending (its end is told by its reader).
_STREAM_ENDING = (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError)


class SharedWriter(Generic[M]):
    """Serialized, cancel-safe writes through `write` (a stream's `write` method)."""

    def __init__(self, write: Callable[[M], Awaitable[None]]) -> None:
        self._write = write
        self._lock = asyncio.Lock()  # FIFO: messages go out in the order they were sent

    async def send(self, message: M) -> None:
        """Write `message`; raises what the write raised. Cancelling the caller does not
        cancel the write."""
        await asyncio.shield(self._locked(message))

    async def _locked(self, message: M) -> None:
        async with self._lock:
            await self._write(message)


# --- client side ----------------------------------------------------------------------


class ClientMux(ABC, Generic[M, A, C]):
    """The client side of one multiplexed stream (`open_call()` opens it: a stub's bidi
    method). Opened on first use, and again on the first use after it ended: at most one
    stream is open at a time, and every call kept is on it. Each call in flight is kept by
    its id (`C`, what the call waits on); the reader hands every answer to its call, and
    drops one whose call was forgotten (over, cancelled, timed out). When the stream ends,
    broken or closed by the peer, every call kept is failed with `gone(reason)` at once,
    so that none waits on a stream that is gone."""

    def __init__(
        self,
        name: str,
        open_call: Callable[[], Any],
        gone: Callable[[str], Exception],
    ) -> None:
        self.name = name
        self._open_call = open_call
        self._gone = gone
        self._calls: dict[int, C] = {}
        self._ids = itertools.count(1)  # never reused, not even on a new stream
        self._stream: Any = None  # the open grpc.aio.StreamStreamCall
        self._writer: SharedWriter[M] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def is_open(self) -> bool:
        return self._writer is not None  # a stream is open, or being opened

    def forget(self, call_id: int) -> None:
        """Stop routing answers to `call_id`: later ones are dropped."""
        self._calls.pop(call_id, None)

    async def aclose(self) -> None:
        """Close for good: the stream is cancelled and its calls fail; later calls fail at
        once."""
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @staticmethod
    async def _write(writer: SharedWriter[M], message: M) -> None:
        # try/except rather than contextlib.suppress: no context manager per message.
        try:
            await writer.send(message)
        except _STREAM_ENDING:
            pass  # the stream is ending: its reader fails every call on it

    def _send_soon(self, message: M) -> None:
        """Write `message` in the background on the stream open now; none open: dropped
        (the calls it could be about ended with the last stream)."""
        if self._writer is not None:
            self._spawn(self._write(self._writer, message))

    def _open(self) -> SharedWriter[M]:
        writer = self._writer
        if writer is None:
            stream = self._open_call()
            writer = SharedWriter(stream.write)
            self._stream, self._writer = stream, writer
            self._spawn(self._read(stream))
        return writer

    async def _read(self, stream: Any) -> None:
        reason = f"{self.name} stream ended"
        try:
            while (answer := await stream.read()) is not grpc.aio.EOF:
                self._deliver(answer)
        except grpc.aio.AioRpcError as exc:
            reason = f"{self.name} stream broke: {exc.code().name}"
            log.warning("stream broke", extra={"stream": self.name, "code": exc.code().name})
        finally:
            # No await from here on: no call can join this stream while it is being failed.
            if self._stream is stream:
                self._stream = self._writer = None  # the next call opens a new stream
            stream.cancel()
            calls = list(self._calls.values())
            self._calls.clear()
            for call in calls:
                self._fail(call, self._gone(reason))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @abstractmethod
    def _deliver(self, answer: A) -> None:
        """Hand `answer` to the call it names, if that call is still kept."""

    @abstractmethod
    def _fail(self, call: C, error: Exception) -> None:
        """Tell `call` (no longer kept) that its stream ended."""


class StreamingCall(ABC, Generic[T, A, R]):
    """One call on a `StreamingMux`, answered by any number of messages up to the one
    `_is_last` says is its last. The protocol adapter subclasses it: `_is_last`,
    `_cancel_message`, and `_payload` (what `read()` returns of an answer)."""

    def __init__(self, mux: StreamingMux[T, A, Any], call_id: int) -> None:
        self.call_id = call_id
        self._mux = mux
        self._inbox: asyncio.Queue[A | Exception] = asyncio.Queue()  # unbounded: see docs
        self._over = False

    async def read(self) -> R | None:
        """The next answer's payload, the last one's included; None once the call is over.
        Raises the mux's `gone` error if the stream ended first (then None)."""
        if self._over:
            return None
        item = await self._inbox.get()
        if isinstance(item, Exception):
            self._over = True  # the mux has forgotten it already
            raise item
        if self._is_last(item):
            self._over = True
            self._mux.forget(self.call_id)
        return self._payload(item)

    def cancel(self) -> None:
        """Stop the call: later answers are dropped and, if it is still on the open
        stream, the peer is told (in the background: cancelling never waits, never
        raises). A no-op once the call is over."""
        if not self._over:
            self._over = True
            self._mux._cancel(self)

    @abstractmethod
    def _is_last(self, answer: A) -> bool:
        """Whether `answer` ends the call."""

    @abstractmethod
    def _cancel_message(self) -> T | None:
        """The message that cancels this call at the peer (None: the protocol has none)."""

    @abstractmethod
    def _payload(self, answer: A) -> R | None:
        """What `read()` returns for `answer`."""


class StreamingMux(ClientMux[T, A, SC]):
    """Calls answered by a sequence of messages: `start(message)` sends a call's first
    message and returns its `call_type` (a `StreamingCall` subclass) to read the answers
    from."""

    def __init__(
        self,
        name: str,
        open_call: Callable[[], Any],
        gone: Callable[[str], Exception],
        call_type: Callable[[StreamingMux[T, A, SC], int], SC],
    ) -> None:
        super().__init__(name, open_call, gone)
        self._call_type = call_type

    async def start(self, message: T) -> SC:
        """Stamp a new call id into `message` and write it, opening the stream if need
        be. A broken stream, or a closed mux, is told by the call's `read()`, never raised
        here. If the caller is cancelled while the message is being written, it still goes
        out whole, and the call is cancelled."""
        call_id = next(self._ids)
        call = self._call_type(self, call_id)
        if self._closed:
            call._inbox.put_nowait(self._gone(f"{self.name} client closed"))
            return call
        message.call_id = call_id
        self._calls[call_id] = call
        try:
            await self._write(self._open(), message)
        except BaseException:
            call.cancel()
            raise
        return call

    def _cancel(self, call: SC) -> None:
        # A call no longer kept is on no open stream: there is nobody to tell.
        if self._calls.pop(call.call_id, None) is not None:
            message = call._cancel_message()
            if message is not None:
                self._send_soon(message)

    def _deliver(self, answer: A) -> None:
        call = self._calls.get(answer.call_id)
        if call is not None:
            call._inbox.put_nowait(answer)

    def _fail(self, call: SC, error: Exception) -> None:
        call._inbox.put_nowait(error)


class UnaryMux(ClientMux[T, A, asyncio.Future[A]]):
    """Calls answered by exactly one message: `await call(message, timeout_s)`."""

    async def call(self, message: T, timeout_s: float) -> A:
        """Stamp a new call id into `message`, write it and wait up to `timeout_s` (the
        write included) for its answer. Raises the mux's `gone` error if the stream ends
        first, the wait times out, or the mux is closed. A call that times out or is
        cancelled is forgotten: its late answer is dropped, so the caller undoes whatever
        the call may have done (the dispatcher releases a reservation by name)."""
        if self._closed:
            raise self._gone(f"{self.name} client closed")
        message.call_id = call_id = next(self._ids)
        answer: asyncio.Future[A] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = answer
        try:
            async with asyncio.timeout(timeout_s):
                await self._write(self._open(), message)
                return await answer
        except TimeoutError:
            raise self._gone(
                f"no answer on the {self.name} stream within {timeout_s:g} s"
            ) from None
        finally:
            self._calls.pop(call_id, None)

    def _deliver(self, answer: A) -> None:
        future = self._calls.get(answer.call_id)
        # Done: its caller was cancelled and has not yet forgotten it.
        if future is not None and not future.done():
            future.set_result(answer)

    def _fail(self, call: asyncio.Future[A], error: Exception) -> None:
        if not call.done():
            call.set_exception(error)


# --- server side ----------------------------------------------------------------------


class StreamSession(ABC, Generic[M]):
    """The server side of one multiplexed stream: reads messages in order and hands each
    to `on_message`; a call that needs one runs as a task kept by key (`spawn`: its call
    id, or whatever the protocol cancels it by) and `cancel(key)` stops it; `write()`
    answers from any task.

    A write that fails means the stream cannot carry answers any more: the session then
    ends (the peer sees the stream close and opens a new one) instead of reading on while
    its answers are lost. However the stream ends (the peer closed it, a write failed, the
    server cancelled the handler), every call task still running is cancelled and waited
    for, then `on_end` runs (the protocol's cleanup, e.g. what the stream's calls held)."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._writer: SharedWriter[Any] = SharedWriter(context.write)
        self._runner: asyncio.Task[Any] | None = None
        self._calls: dict[Hashable, asyncio.Task[None]] = {}
        self._broken = False
        self._ending = False

    async def serve(self) -> None:
        """Run the session: returns when the peer closed the stream or a write failed,
        raises CancelledError when the server cancelled the handler."""
        self._runner = runner = asyncio.current_task()
        assert runner is not None
        try:
            # Headers first, on their own: the first answer is then a plain message.
            await self._context.send_initial_metadata(())
            while (message := await self._context.read()) is not grpc.aio.EOF:
                await self.on_message(message)
        except asyncio.CancelledError:
            if self._broken and runner.uncancel() == 0:
                return  # our own: a write failed (see `write`)
            raise
        finally:
            self._ending = True  # a write failing from here on must not cut the cleanup
            try:
                await self._cancel_all()
            finally:
                await self.on_end()

    async def write(self, message: Any) -> None:
        """Write `message` whole, whatever happens to the caller. Never raises what the
        write raised: a failed write ends the session (its calls are cancelled)."""
        try:
            await self._writer.send(message)
        except Exception as exc:
            if not self._broken and not self._ending and self._runner is not None:
                self._broken = True
                log.warning("stream write failed; ending the stream", extra={"error": repr(exc)})
                self._runner.cancel()

    def spawn(self, key: Hashable, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` as the task of the call `key`, kept until it is done. A key still
        kept is the peer's bug: `work` is closed unrun, the first call keeps the key, and
        the answer is False."""
        if key in self._calls:
            work.close()
            return False
        task = asyncio.get_running_loop().create_task(work)
        self._calls[key] = task
        task.add_done_callback(lambda done: self._forget(key, done))
        return True

    def cancel(self, key: Hashable) -> bool:
        """Cancel the task of the call `key`, if one is kept; it stays kept (and waited
        for when the stream ends) until it is done."""
        task = self._calls.get(key)
        if task is None:
            return False
        task.cancel()
        return True

    def _forget(self, key: Hashable, task: asyncio.Task[None]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]

    async def _cancel_all(self) -> None:
        tasks = list(self._calls.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    @abstractmethod
    async def on_message(self, message: M) -> None:
        """Handle one message read from the stream, in order: reading waits for it."""

    async def on_end(self) -> None:
        """Called once when the stream is over, after its call tasks were cancelled and
        waited for."""
