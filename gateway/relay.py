"""After commit: a dispatch's events turned into the client's answer in its dialect, either
streamed (A9) or assembled into one body, and every error after commit (B3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from contract import dispatcher_pb2
from contract.errors import ErrorCode, Failure
from gateway.canonical import CanonicalRequest
from gateway.dialects.base import Dialect, StreamRenderer
from gateway.dialects.deltas import BadChunk
from gateway.dispatch import DispatchEvents
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics


class Relay:
    """`stream` renders a committed dispatch as SSE bytes, `assemble` builds its one JSON
    body. An error after commit (the provider's, a chunk the dialect cannot read, the
    dispatcher gone) ends the answer; each is counted once, in `_failed`, whichever way
    it reaches the client."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._in_band_errors = metrics.in_band_errors

    async def stream(
        self, events: DispatchEvents, dialect: Dialect, req: CanonicalRequest
    ) -> AsyncIterator[bytes]:
        """The rendered events; what arrived in one message goes out in one write (every
        chunk still its own SSE event). An error ends the stream in band, in the client's
        dialect (B3). The dispatch is cancelled when the stream ends or is closed early."""
        renderer = dialect.stream(req)
        try:
            while True:
                try:
                    batch = await events.batch()
                except ApiError as err:
                    # The dispatcher is gone mid-answer: told in band as what it is.
                    yield renderer.error(self._failed(dialect, err))
                    return
                out, ended = self._render(batch, renderer, dialect)
                if out:
                    yield out
                if ended:
                    return
        finally:
            events.call.cancel()

    def _render(
        self, batch: list[dispatcher_pb2.DispatchEvent], renderer: StreamRenderer, dialect: Dialect
    ) -> tuple[bytes, bool]:
        """The bytes for `batch`, and whether the stream ends with them."""
        parts: list[bytes] = []
        for event in batch:
            kind = event.WhichOneof("event")
            if kind == "chunks":
                try:
                    parts.append(renderer.chunks(list(event.chunks.chunks)))
                except BadChunk as exc:
                    err = ApiError(ErrorCode.PROVIDER_ERROR, str(exc))
                    parts.append(renderer.error(self._failed(dialect, err)))
                    return b"".join(parts), True
            elif kind == "completed":
                parts.append(renderer.completed(event.completed.usage))
                return b"".join(parts), True
            elif kind == "stream_error":
                err = ApiError.of(Failure.from_proto(event.stream_error))
                parts.append(renderer.error(self._failed(dialect, err)))
                return b"".join(parts), True
        return b"".join(parts), False

    async def assemble(
        self, events: DispatchEvents, dialect: Dialect, req: CanonicalRequest
    ) -> dict[str, Any]:
        """The whole answer as the dialect's one JSON body. Nothing was written yet, so an
        error after commit raises ApiError and becomes the response's own status: the
        provider's 5xx as it is (a 4xx becomes 502 `provider_error`), 502 for an unreadable
        chunk, 503 `service_unavailable` if the dispatcher went away. The caller cancels
        the dispatch."""
        assembler = dialect.assembler(req)
        try:
            while True:
                event = await events.next()
                kind = event.WhichOneof("event")
                if kind == "chunks":
                    try:
                        for chunk in event.chunks.chunks:
                            assembler.add(chunk)
                    except BadChunk as exc:
                        raise ApiError(ErrorCode.PROVIDER_ERROR, str(exc)) from exc
                elif kind == "completed":
                    return assembler.result(event.completed.usage)
                elif kind == "stream_error":
                    # Nothing was written yet, so the error is the response's own status;
                    # after commit the provider failed us, even if it called it a 4xx.
                    failure = Failure.from_proto(event.stream_error)
                    if failure.status < 500:
                        failure = Failure(ErrorCode.PROVIDER_ERROR, failure.message)
                    raise ApiError.of(failure)
        except ApiError as err:
            self._failed(dialect, err)
            raise

    def _failed(self, dialect: Dialect, err: ApiError) -> ApiError:
        """Counts `err` as an error after commit (the only place that does) and hands it
        back for the client."""
        self._in_band_errors.labels(dialect.name).inc()
        return err
