"""The gateway's side of the `Dispatches` stream: every request's dispatch over one
long-lived gRPC stream to the dispatcher, opened on first use and again after it breaks.
The multiplexing is `svckit.rpcmux`'s; this says how a dispatch is written in the proto."""

from __future__ import annotations

from contract import dispatcher_pb2, dispatcher_pb2_grpc
from svckit.rpcmux import StreamingCall, StreamingMux


class DispatcherUnavailable(Exception):
    """The stream to the dispatcher broke (or could not be opened)."""


class MuxCall(
    StreamingCall[
        dispatcher_pb2.DispatchCall, dispatcher_pb2.DispatchOut, dispatcher_pb2.DispatchEvents
    ]
):
    """One dispatch on the stream: `read()` its event batches (None once the dispatcher
    said the dispatch is over; DispatcherUnavailable if the stream broke first), `cancel()`
    it (the dispatcher releases its slots; a no-op once it is over)."""

    def _is_last(self, answer: dispatcher_pb2.DispatchOut) -> bool:
        return answer.end

    def _payload(self, answer: dispatcher_pb2.DispatchOut) -> dispatcher_pb2.DispatchEvents | None:
        if answer.end and not answer.HasField("events"):
            return None
        return answer.events

    def _cancel_message(self) -> dispatcher_pb2.DispatchCall:
        return dispatcher_pb2.DispatchCall(call_id=self.call_id, cancel=True)


class DispatchMux:
    """Every dispatch of this gateway over one `Dispatches` stream."""

    def __init__(self, stub: dispatcher_pb2_grpc.DispatcherStub) -> None:
        self._mux: StreamingMux[dispatcher_pb2.DispatchCall, dispatcher_pb2.DispatchOut, MuxCall]
        self._mux = StreamingMux("dispatches", stub.Dispatches, DispatcherUnavailable, MuxCall)

    async def start(self, request: dispatcher_pb2.DispatchRequest) -> MuxCall:
        """Start a dispatch; a broken stream is told by the call's `read()`. If the caller is
        cancelled while the start is being written, the start still goes out whole and the
        dispatch is cancelled."""
        return await self._mux.start(dispatcher_pb2.DispatchCall(start=request))

    async def aclose(self) -> None:
        await self._mux.aclose()
