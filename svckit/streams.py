"""Writing to a long-lived gRPC stream that many tasks share.

grpc.aio cancels the whole call when the task awaiting `write()` is cancelled in the
middle of it (client side), and a server stream whose first write was cancelled can never
write again. Our streams carry many requests at once, and those requests' tasks are
cancelled all the time (a race loser, a client that left). So every write runs in a task of
its own, shielded from the caller and one at a time: a cancelled caller stops waiting, its
message still goes out whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import grpc

log = logging.getLogger(__name__)
M = TypeVar("M")
A = TypeVar("A")
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


class StreamSession(ABC, Generic[M]):
    """The server side of one long-lived bidi stream: reads messages in order and hands
    each to `on_message`; `write()` answers from any task. A write that fails means the
    stream cannot carry answers any more: the session then ends (the peer sees the stream
    close and opens a new one) instead of reading on while its answers are lost.
    `on_end` runs however the stream ended."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._writer: SharedWriter[Any] = SharedWriter(context.write)
        self._runner: asyncio.Task[None] | None = None
        self._broken = False

    async def serve(self) -> None:
        self._runner = runner = asyncio.current_task()  # type: ignore[assignment]
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
            await self.on_end()

    async def write(self, message: Any) -> None:
        try:
            await self._writer.send(message)
        except Exception as exc:
            if not self._broken and self._runner is not None:
                self._broken = True
                log.warning("stream write failed; ending the stream", extra={"error": repr(exc)})
                self._runner.cancel()

    @abstractmethod
    async def on_message(self, message: M) -> None:
        """Handle one message read from the stream, in order."""

    async def on_end(self) -> None:
        """Called once when the stream is over."""


class ClientStream(Generic[M, A]):
    """The client side of a long-lived bidi stream that carries many calls: opened on first
    use, and again after it ends. Every message read goes to `on_answer`; when a stream
    ends (broken, or closed by the peer), `on_end` is told why, once, so that the calls
    still waiting on it fail instead of hanging."""

    def __init__(
        self,
        name: str,
        open_call: Callable[[], grpc.aio.StreamStreamCall],  # type: ignore[type-arg]
        on_answer: Callable[[A], None],
        on_end: Callable[[str], None],
    ) -> None:
        self._name = name
        self._open_call = open_call
        self._on_answer = on_answer
        self._on_end = on_end
        self._stream: grpc.aio.StreamStreamCall | None = None  # type: ignore[type-arg]
        self._writer: SharedWriter[M] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    async def send(self, message: M) -> None:
        """Write `message`, opening the stream if need be. A stream that is ending takes
        it silently: its end is told through `on_end`."""
        await self._send(self._open(), message)

    def send_soon(self, message: M) -> None:
        """`send` in the background, on the stream open now (none open: dropped)."""
        if self._writer is not None:
            self._spawn(self._send(self._writer, message))

    @staticmethod
    async def _send(writer: SharedWriter[M], message: M) -> None:
        with contextlib.suppress(
            grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError
        ):
            await writer.send(message)

    def _open(self) -> SharedWriter[M]:
        if self._writer is None:
            stream = self._open_call()
            self._stream, self._writer = stream, SharedWriter(stream.write)
            self._spawn(self._read(stream))
        return self._writer

    async def _read(self, stream: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        reason = f"{self._name} stream ended"
        try:
            while (answer := await stream.read()) is not grpc.aio.EOF:
                self._on_answer(answer)
        except grpc.aio.AioRpcError as exc:
            reason = f"{self._name} stream broke: {exc.code().name}"
            log.warning("stream broke", extra={"stream": self._name, "code": exc.code().name})
        finally:
            if self._stream is stream:
                self._stream = self._writer = None  # the next call opens a new stream
            stream.cancel()
            self._on_end(reason)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
