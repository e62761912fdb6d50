"""Dispatcher gRPC servicer: a gateway's dispatches over one `Dispatches` stream."""

from __future__ import annotations

import asyncio
import logging

import grpc

from dispatcher_svc.driver import Dispatcher
from protos import dispatcher_pb2, dispatcher_pb2_grpc

log = logging.getLogger(__name__)
_TERMINAL = frozenset({"completed", "failed", "stream_error"})


class DispatcherServicer(dispatcher_pb2_grpc.DispatcherServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def Dispatches(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        await DispatchSession(self._dispatcher, context).run()


class DispatchSession:
    """One gateway's stream: each started dispatch runs as its own task and writes its
    events tagged with its call id; a cancel, or the end of the stream, cancels dispatches
    (which release their slots, B12)."""

    def __init__(self, dispatcher: Dispatcher, context: grpc.aio.ServicerContext) -> None:
        self._dispatcher = dispatcher
        self._context = context
        self._write_lock = asyncio.Lock()  # one message in flight on a call at a time
        self._runs: dict[int, asyncio.Task[None]] = {}

    async def run(self) -> None:
        try:
            while (call := await self._context.read()) is not grpc.aio.EOF:
                assert isinstance(call, dispatcher_pb2.DispatchCall)
                kind = call.WhichOneof("call")
                if kind == "start":
                    self._start(call.call_id, call.start)
                elif kind == "cancel":
                    task = self._runs.get(call.call_id)
                    if task is not None:
                        task.cancel()
        finally:
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
            async for events in self._dispatcher.dispatch(request):
                ended = events[-1].WhichOneof("event") in _TERMINAL
                await self._write(
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
                await asyncio.shield(
                    self._write(dispatcher_pb2.DispatchOut(call_id=call_id, end=True))
                )

    async def _write(self, out: dispatcher_pb2.DispatchOut) -> None:
        try:
            async with self._write_lock:
                await self._context.write(out)
        except Exception as exc:  # the stream is ending: `run` cancels every dispatch
            log.debug("dispatch event not delivered", extra={"error": repr(exc)})
