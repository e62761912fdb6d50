"""Dispatcher gRPC servicer: a gateway's dispatches over one `Dispatches` stream."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from contract import dispatcher_pb2, dispatcher_pb2_grpc
from dispatcher_svc.driver import Dispatcher
from svckit.streams import StreamSession

_TERMINAL = frozenset({"completed", "failed", "stream_error"})


class DispatcherServicer(dispatcher_pb2_grpc.DispatcherServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def Dispatches(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        await DispatchSession(self._dispatcher, context).serve()


class DispatchSession(StreamSession[dispatcher_pb2.DispatchCall]):
    """One gateway's stream: each started dispatch runs as its own task and writes its
    events tagged with its call id; a cancel, or the end of the stream, cancels dispatches
    (which release their slots, B12)."""

    def __init__(self, dispatcher: Dispatcher, context: grpc.aio.ServicerContext) -> None:
        super().__init__(context)
        self._dispatcher = dispatcher
        self._runs: dict[int, asyncio.Task[None]] = {}

    async def on_message(self, message: dispatcher_pb2.DispatchCall) -> None:
        kind = message.WhichOneof("call")
        if kind == "start":
            self._start(message.call_id, message.start)
        elif kind == "cancel":
            task = self._runs.get(message.call_id)
            if task is not None:
                task.cancel()

    async def on_end(self) -> None:
        runs = list(self._runs.values())
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    def _start(self, call_id: int, request: dispatcher_pb2.DispatchRequest) -> None:
        if call_id in self._runs:
            return  # a repeated id is a gateway bug; the first dispatch keeps it
        task = asyncio.get_running_loop().create_task(self._dispatch(call_id, request))
        self._runs[call_id] = task
        task.add_done_callback(lambda _: self._runs.pop(call_id, None))

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
