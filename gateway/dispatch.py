"""One request's dispatch as the gateway reads it: the events the dispatcher sends for it
over the mux call, and what a broken or ended stream means for the answer (A8)."""

from __future__ import annotations

from collections import deque

from contract import dispatcher_pb2
from contract.errors import ErrorCode, Failure
from gateway.errors import ApiError
from gateway.mux import DispatcherUnavailable, MuxCall


class DispatchEvents:
    """The dispatcher's events for one request. They arrive one message per dispatch step
    (Committed with the held chunks, the last chunks with Completed).

    `committed()` waits for the commit; after it, `next()` hands the events out one at a
    time and `batch()` everything the current message still holds. The owner cancels
    `call` when it is done with the dispatch."""

    def __init__(self, call: MuxCall) -> None:
        self.call = call
        self._pending: deque[dispatcher_pb2.DispatchEvent] = deque()

    async def committed(self) -> dispatcher_pb2.Committed:
        """A8: nothing is written before the dispatcher commits or fails. Returns the
        commit (the held chunks stay pending behind it); raises ApiError with the
        dispatcher's Failed, 503 if the stream broke or ended first, 502 for any other
        event before commit."""
        while True:
            if not self._pending:
                self._pending.extend(await self._receive(committed=False))
            event = self._pending.popleft()
            kind = event.WhichOneof("event")
            if kind == "committed":
                return event.committed
            if kind == "failed":
                failure = Failure.from_proto(event.failed)
                param = "model" if failure.code is ErrorCode.MODEL_NOT_FOUND else None
                raise ApiError.of(failure, param)
            raise ApiError(ErrorCode.PROVIDER_ERROR, f"dispatcher sent {kind} before commit")

    async def next(self) -> dispatcher_pb2.DispatchEvent:
        """The next event after commit (see `_receive` for a broken or ended stream)."""
        if not self._pending:
            self._pending.extend(await self._receive(committed=True))
        return self._pending.popleft()

    async def batch(self) -> list[dispatcher_pb2.DispatchEvent]:
        """Every event after commit that the current message still holds (never empty)."""
        if self._pending:
            events = list(self._pending)
            self._pending.clear()
            return events
        return await self._receive(committed=True)

    async def _receive(self, committed: bool) -> list[dispatcher_pb2.DispatchEvent]:
        """The next message's events (never empty). A stream that ended without an answer
        is told as the event the dispatcher would have sent: Failed (503) before commit, a
        stream_error (502) after it. A broken stream raises ApiError 503; after commit the
        reader decides how to tell it."""
        try:
            message = await self.call.read()
        except DispatcherUnavailable as exc:
            # A 503: Retry-After is the vocabulary's default (contract.errors).
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "dispatcher unavailable") from exc
        if message is None or not message.events:
            if committed:
                ended = Failure(ErrorCode.PROVIDER_ERROR, "dispatch ended")
                return [dispatcher_pb2.DispatchEvent(stream_error=ended.to_proto())]
            failed = Failure(ErrorCode.SERVICE_UNAVAILABLE, "dispatch ended without an answer")
            return [dispatcher_pb2.DispatchEvent(failed=failed.to_proto())]
        return list(message.events)
