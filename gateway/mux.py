"""The gateway's side of the `Dispatches` stream: every request's dispatch over one
long-lived gRPC stream to the dispatcher, opened on first use and again after it breaks."""

from __future__ import annotations

import asyncio
import itertools

from contract import dispatcher_pb2, dispatcher_pb2_grpc
from svckit.streams import ClientStream


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
    """Every dispatch of this gateway over one `Dispatches` stream (see `ClientStream`)."""

    def __init__(self, stub: dispatcher_pb2_grpc.DispatcherStub) -> None:
        self._calls: dict[int, MuxCall] = {}
        self._stream: ClientStream[dispatcher_pb2.DispatchCall, dispatcher_pb2.DispatchOut] = (
            ClientStream("dispatches", stub.Dispatches, self._deliver, self._fail_all)
        )
        self._ids = itertools.count(1)

    async def start(self, request: dispatcher_pb2.DispatchRequest) -> MuxCall:
        """Start a dispatch. If the caller is cancelled while the start is being written,
        the start still goes out whole; the caller cancels the returned call as usual."""
        call = MuxCall(self, next(self._ids))
        self._calls[call.call_id] = call
        try:
            await self._stream.send(
                dispatcher_pb2.DispatchCall(call_id=call.call_id, start=request)
            )
        except asyncio.CancelledError:
            call.cancel()
            raise
        return call

    def send_cancel(self, call_id: int) -> None:
        # No stream open: the one the dispatch was on is gone, and the dispatch with it.
        self._stream.send_soon(dispatcher_pb2.DispatchCall(call_id=call_id, cancel=True))

    def forget(self, call_id: int) -> None:
        self._calls.pop(call_id, None)

    def _deliver(self, out: dispatcher_pb2.DispatchOut) -> None:
        call = self._calls.get(out.call_id)
        if call is not None:
            call.inbox.put_nowait(out)

    def _fail_all(self, reason: str) -> None:
        error = DispatcherUnavailable(reason)
        for call in list(self._calls.values()):
            call.inbox.put_nowait(error)
        self._calls.clear()

    async def aclose(self) -> None:
        await self._stream.aclose()
