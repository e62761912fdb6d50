"""Dispatcher gRPC servicer: a gateway's dispatches over one `Dispatches` stream."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Final

import grpc

from contract import dispatcher_pb2, dispatcher_pb2_grpc
from dispatcher_svc.dispatch.driver import Dispatcher
from svckit.rpcmux import StreamSession

_TERMINAL = frozenset({"completed", "failed", "stream_error"})
# What a chunk costs in a message beyond its bytes (its field tag and length), and what a
# message needs beyond its events (call id, end, the events' own framing): room kept free.
_CHUNK_OVERHEAD: Final = 8
_ENVELOPE: Final = 64


class DispatcherServicer(dispatcher_pb2_grpc.DispatcherServicer):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def Dispatches(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        await DispatchSession(self._dispatcher, context).serve()


class DispatchSession(StreamSession[dispatcher_pb2.DispatchCall]):
    """One gateway's stream: each started dispatch runs as its own task, kept by its call
    id, and writes its events tagged with that id; a cancel, or the end of the stream,
    cancels dispatches (which release their slots, B12). Every message stays within the
    dispatcher's budget (`split`), so one provider's output cannot make a message that
    breaks the stream for every other request on it."""

    def __init__(self, dispatcher: Dispatcher, context: grpc.aio.ServicerContext) -> None:
        super().__init__(context)
        self._dispatcher = dispatcher
        self._budget = dispatcher.max_message_bytes

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
                    out = dispatcher_pb2.DispatchOut(
                        call_id=call_id,
                        events=dispatcher_pb2.DispatchEvents(events=events),
                        end=ended,
                    )
                    if out.ByteSize() <= self._budget:  # the hot path: one message a step
                        await self.write(out)
                        continue
                    parts = split(events, self._budget - _ENVELOPE)
                    for i, part in enumerate(parts, 1):
                        await self.write(
                            dispatcher_pb2.DispatchOut(
                                call_id=call_id,
                                events=dispatcher_pb2.DispatchEvents(events=part),
                                end=ended and i == len(parts),
                            )
                        )
        finally:
            if not ended:
                # Over without a final event (cancelled, or the run failed): say so, so
                # the gateway never waits for a dispatch that is gone.
                await self.write(dispatcher_pb2.DispatchOut(call_id=call_id, end=True))


def split(
    events: Sequence[dispatcher_pb2.DispatchEvent], budget: int
) -> list[list[dispatcher_pb2.DispatchEvent]]:
    """`events` in order, over as few lists as fit `budget` bytes each: a `chunks` event is
    split between chunks (each part its own `chunks` event), other events are whole. A
    single chunk or event larger than `budget` goes alone (the driver refuses chunks
    larger than a message, so that is at most its envelope over)."""
    parts: list[list[dispatcher_pb2.DispatchEvent]] = []
    part: list[dispatcher_pb2.DispatchEvent] = []
    size = 0

    def close() -> None:
        nonlocal part, size
        if part:
            parts.append(part)
        part, size = [], 0

    for event in events:
        if event.WhichOneof("event") != "chunks":
            cost = event.ByteSize() + _CHUNK_OVERHEAD
            if size + cost > budget:
                close()
            part.append(event)
            size += cost
            continue
        held: list[bytes] = []
        for chunk in event.chunks.chunks:
            cost = len(chunk) + _CHUNK_OVERHEAD
            if size + cost > budget and (held or part):
                if held:
                    part.append(_chunks(held))
                    held = []
                close()
            held.append(chunk)
            size += cost
        if held:
            part.append(_chunks(held))
    close()
    return parts


def _chunks(chunks: list[bytes]) -> dispatcher_pb2.DispatchEvent:
    return dispatcher_pb2.DispatchEvent(chunks=dispatcher_pb2.Chunks(chunks=chunks))
