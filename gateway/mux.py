"""The gateway's side of the `Dispatches` stream: every request's dispatch over one
long-lived gRPC stream to the dispatcher, opened on first use and again after it breaks."""

from __future__ import annotations

import asyncio
import itertools
import logging

import grpc

from protos import dispatcher_pb2, dispatcher_pb2_grpc
from svckit.streams import SharedWriter

log = logging.getLogger(__name__)


class DispatcherUnavailable(Exception):
    """The stream to the dispatcher broke (or could not be opened)."""


_Item = dispatcher_pb2.DispatchOut | DispatcherUnavailable


class MuxCall:
    """One dispatch on the stream: `read()` its event batches, `cancel()` it."""

    def __init__(self, mux: DispatchMux, call_id: int) -> None:
        self._mux = mux
        self.call_id = call_id
        self.inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._over = False

    async def read(self) -> dispatcher_pb2.DispatchEvents | None:
        """The next batch of events; None once the dispatcher said the dispatch is over.
        Raises DispatcherUnavailable if the stream broke first."""
        if self._over:
            return None
        item = await self.inbox.get()
        if isinstance(item, DispatcherUnavailable):
            self._finish()
            raise item
        if item.end:
            self._finish()
            if not item.HasField("events"):
                return None
        return item.events

    def cancel(self) -> None:
        """Stop the dispatch (the dispatcher releases its slots); a no-op once it is over."""
        if not self._over:
            self._finish()
            self._mux.send_cancel(self.call_id)

    def _finish(self) -> None:
        self._over = True
        self._mux.forget(self.call_id)


class DispatchMux:
    def __init__(self, stub: dispatcher_pb2_grpc.DispatcherStub) -> None:
        self._stub = stub
        self._stream: grpc.aio.StreamStreamCall | None = None  # type: ignore[type-arg]
        self._writer: SharedWriter[dispatcher_pb2.DispatchCall] | None = None
        self._calls: dict[int, MuxCall] = {}
        self._ids = itertools.count(1)
        self._background: set[asyncio.Task[None]] = set()

    async def start(self, request: dispatcher_pb2.DispatchRequest) -> MuxCall:
        """Start a dispatch. If the caller is cancelled while the start is being written,
        the start still goes out whole; the caller cancels the returned call as usual."""
        writer = self._open()
        call = MuxCall(self, next(self._ids))
        self._calls[call.call_id] = call
        message = dispatcher_pb2.DispatchCall(call_id=call.call_id, start=request)
        try:
            await self._send(writer, message)
        except asyncio.CancelledError:
            call.cancel()
            raise
        return call

    def send_cancel(self, call_id: int) -> None:
        writer = self._writer
        if writer is None:
            return  # the stream is gone, and every dispatch on it with it
        cancel = dispatcher_pb2.DispatchCall(call_id=call_id, cancel=True)
        task = asyncio.get_running_loop().create_task(self._send(writer, cancel))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def forget(self, call_id: int) -> None:
        self._calls.pop(call_id, None)

    @staticmethod
    async def _send(
        writer: SharedWriter[dispatcher_pb2.DispatchCall], message: dispatcher_pb2.DispatchCall
    ) -> None:
        try:
            await writer.send(message)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the stream is ending: its reader tells every call

    def _open(self) -> SharedWriter[dispatcher_pb2.DispatchCall]:
        if self._stream is not None and self._writer is not None:
            return self._writer
        stream = self._stub.Dispatches()
        self._stream = stream
        self._writer = SharedWriter(stream.write)
        task = asyncio.get_running_loop().create_task(self._read(stream))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return self._writer

    async def _read(self, stream: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        error = DispatcherUnavailable("dispatch stream ended")
        try:
            while (out := await stream.read()) is not grpc.aio.EOF:
                call = self._calls.get(out.call_id)
                if call is not None:
                    call.inbox.put_nowait(out)
        except grpc.aio.AioRpcError as exc:
            error = DispatcherUnavailable(f"dispatch stream broke: {exc.code().name}")
            log.warning("dispatcher stream broke", extra={"code": exc.code().name})
        finally:
            if self._stream is stream:
                self._stream = self._writer = None  # the next request opens a new stream
            stream.cancel()
            for call in list(self._calls.values()):
                call.inbox.put_nowait(error)
            self._calls.clear()

    async def aclose(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
