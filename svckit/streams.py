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
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc

log = logging.getLogger(__name__)
M = TypeVar("M")


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
