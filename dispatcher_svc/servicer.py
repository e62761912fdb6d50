"""Dispatcher gRPC servicer: a gateway's dispatches over one `Dispatches` stream."""

from __future__ import annotations

import contextlib

import grpc

from contract import dispatcher_pb2, dispatcher_pb2_grpc
from dispatcher_svc.dispatch.driver import Dispatcher
from svckit.rpcmux import StreamSession

_TERMINAL = frozenset({"completed", "failed", "stream_error"})


class DispatcherServicer(dispatcher_pb2_grpc.DispatcherServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def Dispatches(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        await DispatchSession(self._dispatcher, context).serve()


class DispatchSession(StreamSession[dispatcher_pb2.DispatchCall]):
    """One gateway's stream: each started dispatch runs as its own task, kept by its call
    id, and writes its events tagged with that id; a cancel, or the end of the stream,
    cancels dispatches (which release their slots, B12)."""

    def __init__(self, dispatcher: Dispatcher, context: grpc.aio.ServicerContext) -> None:
        super().__init__(context)
        self._dispatcher = dispatcher

    async def on_message(self, message: dispatcher_pb2.DispatchCall) -> None:
        kind = message.WhichOneof("call")
        if kind == "start":
            # A repeated id is a gateway bug: the first dispatch keeps it.
            self.spawn(message.call_id, self._dispatch(message.call_id, message.start))
        elif kind == "cancel":
            self.cancel(message.call_id)

    async def _dispatch(self, call_id: int, request: dispatcher_pb2.DispatchRequest) -> None:
        ended = False
        try:
            # aclosing: a cancelled dispatch releases its slots now, not when collected.
            async with contextlib.aclosing(self._dispatcher.dispatch(request)) as batches:
                async for events in batches:
                    ended = events[-1].WhichOneof("event") in _TERMINAL
                    await self.write(
                        dispatcher_pb2.DispatchOut(
                            call_id=call_id,
                            events=dispatcher_pb2.DispatchEvents(events=events),
                            end=ended,
                        )
                    )
        finally:
            if not ended:
                # Over without a final event (cancelled, or the run failed): say so, so
                # the gateway never waits for a dispatch that is gone.
                await self.write(dispatcher_pb2.DispatchOut(call_id=call_id, end=True))
