"""The gateway's HTTP/1.1 protocol: uvicorn's httptools protocol with the edge's connection
guard (`gateway.limits`, A12) wired into its parser callbacks.

uvicorn has no deadline on a request's headers or body (its keep-alive timer runs only
between requests and stops at the first byte), no limit on header size with httptools, and
its `limit_concurrency` counts half-sent requests as load: a few hundred stalled
connections would turn every real request into a 503 and, past the file limit, into
nothing at all. Here each parser event is reported to the guard, a sweep closes what is
past its deadline, and a new connection at the limit takes the place of the one that has
waited longest for a request.

The cost on the hot path is a few dict operations per request: `python -m bench ab` at c=1
showed no difference beyond noise (added p50 3.26 ms without the edge, 3.27 ms with it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from contract.errors import ErrorCode
from gateway.errors import ApiError, openai_error_body
from gateway.limits import CloseReason, ConnectionGuard

log = logging.getLogger(__name__)

_REASON_PHRASES = {408: "Request Timeout", 431: "Request Header Fields Too Large"}


def _raw_answer(status: int, code: ErrorCode, message: str, retry_after_s: int = 0) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for a connection the app never
    saw (so there is no path to pick the dialect by: OpenAI's error shape)."""
    err = ApiError(code, message, status=status, retry_after_s=retry_after_s)
    body = json.dumps(openai_error_body(err)).encode()
    phrase = _REASON_PHRASES.get(status, "Service Unavailable")
    head = [
        f"HTTP/1.1 {status} {phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after_s:
        head.append(f"retry-after: {retry_after_s}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_REFUSED = _raw_answer(
    503, ErrorCode.SERVICE_UNAVAILABLE, "too many connections, retry shortly", retry_after_s=1
)
_TOO_LARGE = _raw_answer(431, ErrorCode.INVALID_REQUEST, "request headers too large")
_TIMED_OUT = _raw_answer(408, ErrorCode.INVALID_REQUEST, "request headers not received in time")


class _Sweeper:
    """Runs the guard's sweep every `sweep_interval_s` while any connection is open."""

    def __init__(self, guard: ConnectionGuard[EdgeProtocolBase]) -> None:
        self._guard = guard
        self._handle: asyncio.TimerHandle | None = None

    def ensure(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is None:
            self._handle = loop.call_later(self._guard.limits.sweep_interval_s, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        try:
            self._guard.sweep()
        finally:  # a failing close must not stop the deadlines for everyone else
            if self._guard.open_count:
                self.ensure(loop)


@dataclass(frozen=True)
class _Edge:
    guard: ConnectionGuard[EdgeProtocolBase]
    sweeper: _Sweeper
    on_close: Callable[[CloseReason], None]


class EdgeProtocolBase(HttpToolsProtocol):
    """uvicorn's httptools protocol reporting to a `ConnectionGuard`; `edge_protocol` makes
    the class bound to one guard (uvicorn instantiates the class itself)."""

    edge: _Edge

    # Per connection: bytes received since the current request's headers began (a body
    # still arriving is not counted), and where the parser is.
    _header_bytes: int
    _in_headers: bool
    _in_body: bool

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._in_headers = True
        self._in_body = False
        if not self.edge.guard.opened(self):
            self._answer_and_close(CloseReason.REFUSED, _REFUSED)
            return
        self.edge.sweeper.ensure(self.loop)

    def connection_lost(self, exc: Exception | None) -> None:
        self.edge.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_body:
            super().data_received(data)
            return
        self._header_bytes += len(data)
        super().data_received(data)
        # httptools buffers a header of any size: stop at the limit, whole request line
        # and headers counted, a body in the same read excluded (headers then complete).
        if self._in_headers and self._header_bytes > self.edge.guard.limits.max_header_bytes:
            if not self.transport.is_closing():
                self.edge.guard.closed(self)
                self._answer_and_close(CloseReason.HEADERS_TOO_LARGE, _TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self.edge.guard.request_started(self)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._in_body = True
        self._header_bytes = 0
        self.edge.guard.headers_done(self)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.edge.guard.body_received(self)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self.edge.guard.body_done(self)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Unless a pipelined request is being answered now, the next one is awaited.
        if self.cycle is not None and self.cycle.response_complete:
            self.edge.guard.response_done(self)

    def close_for(self, reason: CloseReason) -> None:
        """Called by the guard: a deadline passed, or this connection gave its place up."""
        if reason is CloseReason.HEADER_TIMEOUT and self._header_bytes:
            self._answer_and_close(reason, _TIMED_OUT)  # a request had begun: tell it why
        else:
            self.edge.on_close(reason)
            self.transport.close()
        log.debug("connection closed by the edge", extra={"reason": reason.value})

    def _answer_and_close(self, reason: CloseReason, answer: bytes) -> None:
        self.edge.on_close(reason)
        self.transport.write(answer)
        self.transport.close()

    def _unsupported_upgrade_warning(self) -> None:
        # The gateway serves no WebSocket; a client asking for one gets plain HTTP, and
        # must not be able to fill the log with a warning per request.
        log.debug("upgrade request ignored")


def edge_protocol(
    guard: ConnectionGuard[EdgeProtocolBase], on_close: Callable[[CloseReason], None]
) -> type[EdgeProtocolBase]:
    """The protocol class for uvicorn's `http=`, bound to `guard`; `on_close(reason)` is
    called for each connection the edge closes (a metric)."""

    class EdgeProtocol(EdgeProtocolBase):
        edge = _Edge(guard, _Sweeper(guard), on_close)

    return EdgeProtocol
