"""The HTTP edge's limits against hostile clients (A12, A13, A15): what a connection may hold
and for how long, and which request ids are ours to repeat. Pure: no sockets, no loop, the
clock is injected; `gateway.protocol` wires it into uvicorn's HTTP protocol.

A connection is always in one of three phases, and only two of them have a deadline:

- *awaiting a request*: from the moment it opens, or its last response ended, until the
  next request's headers are complete. Deadline `header_timeout_s` from the start of the
  phase (so a client that connects and sends nothing, sends half its headers, or keeps an
  unread body trickling in after its answer, is closed). Such a connection holds nothing of
  ours, so it is also the one given up when the connection limit is reached: the one
  waiting longest goes first.
- *sending its body*: from headers complete until the body is complete. Closed when no
  byte came for `body_idle_timeout_s`, or the body is not complete `body_timeout_s` after
  its headers.
- *being answered*: no deadline here (the dispatch has its own, B6-B8); never given up.

Past `max_connections`, a new connection takes the place of the one awaiting a request the
longest; when every connection is being answered or sending its body, the new one is
refused (the glue answers a 503 and closes it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar


class CloseReason(StrEnum):
    """Why the edge closed a connection (the label of `gateway_connections_closed`)."""

    HEADER_TIMEOUT = "header_timeout"  # headers not complete within the deadline
    BODY_TIMEOUT = "body_timeout"  # body idle too long, or not complete in time
    EVICTED = "evicted"  # gave its place to a new connection at the limit
    REFUSED = "refused"  # arrived at the limit with nothing to give up: 503
    HEADERS_TOO_LARGE = "headers_too_large"  # 431


@dataclass(frozen=True)
class EdgeLimits:
    """Settings of the connection guard (HEDGEROW_* in gateway/config.py)."""

    max_connections: int = 1000
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    body_timeout_s: float = 300.0
    max_header_bytes: int = 64 * 1024

    @property
    def sweep_interval_s(self) -> float:
        """How often deadlines are checked: a quarter of the shortest one, within
        50 ms..1 s, so a deadline is kept to within a quarter of itself."""
        shortest = min(self.header_timeout_s, self.body_idle_timeout_s, self.body_timeout_s)
        return min(1.0, max(0.05, shortest / 4))


class Connection(Hashable, Protocol):
    """What the guard needs of a connection: to close it, saying why."""

    def close_for(self, reason: CloseReason) -> None: ...


C = TypeVar("C", bound=Connection)


class ConnectionGuard(Generic[C]):
    """Tracks every open connection's phase (see the module doc) and closes the ones past
    their deadline (`sweep`) or given up at the limit (`opened`).

    The glue reports each transition: `opened`, `request_started`, `headers_done`,
    `body_received`, `body_done`, `response_done`, `closed`. Every method is O(1) except
    `sweep`, which is O(connections sending a body + connections it closes). A connection
    the guard closes is forgotten at once (it reports nothing more that matters)."""

    def __init__(self, limits: EdgeLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._open: set[C] = set()
        # Awaiting a request, oldest first: a dict keeps insertion order, and a connection
        # enters with `now` and leaves before it enters again, so order is age order.
        self._awaiting: dict[C, float] = {}
        self._body: dict[C, list[float]] = {}  # sending its body: [headers done at, last byte at]

    @property
    def open_count(self) -> int:
        return len(self._open)

    def opened(self, conn: C) -> bool:
        """A new connection. False: refused (every connection is busy); it is not tracked
        and the caller answers 503 and closes it. At the limit with some connection awaiting
        a request, the oldest of those is closed (EVICTED) to make room."""
        if len(self._open) >= self.limits.max_connections:
            victim = next(iter(self._awaiting), None)
            if victim is None:
                return False
            self._forget(victim)
            victim.close_for(CloseReason.EVICTED)
        self._open.add(conn)
        self._awaiting[conn] = self._clock()
        return True

    def closed(self, conn: C) -> None:
        """The connection is gone (whoever closed it)."""
        self._forget(conn)

    def request_started(self, conn: C) -> None:
        """The first byte of a request: it is awaiting its headers, since the phase began
        (the connection opened or its last response ended), or from now if pipelined."""
        if conn in self._open and conn not in self._awaiting:
            self._awaiting[conn] = self._clock()

    def headers_done(self, conn: C) -> None:
        """Headers complete: the body (if any) is read under its own deadlines."""
        if conn not in self._open:
            return
        self._awaiting.pop(conn, None)
        now = self._clock()
        self._body[conn] = [now, now]

    def body_received(self, conn: C) -> None:
        """Some body bytes arrived: the idle deadline starts again."""
        times = self._body.get(conn)
        if times is not None:
            times[1] = self._clock()

    def body_done(self, conn: C) -> None:
        """The whole body arrived: being answered, no deadline."""
        self._body.pop(conn, None)

    def response_done(self, conn: C) -> None:
        """The answer ended and nothing pipelined is being answered: awaiting the next
        request. A body still arriving (the answer did not need it: 401, 413) counts as
        part of this phase, so it must end within the header deadline too."""
        self._body.pop(conn, None)
        if conn in self._open and conn not in self._awaiting:
            self._awaiting[conn] = self._clock()

    def sweep(self) -> None:
        """Close every connection past its deadline."""
        now = self._clock()
        limits = self.limits
        expired: list[tuple[C, CloseReason]] = []
        for conn, since in self._awaiting.items():
            if now - since < limits.header_timeout_s:
                break  # the rest are younger
            expired.append((conn, CloseReason.HEADER_TIMEOUT))
        for conn, (started, last) in self._body.items():
            if now - last >= limits.body_idle_timeout_s or now - started >= limits.body_timeout_s:
                expired.append((conn, CloseReason.BODY_TIMEOUT))
        for conn, reason in expired:
            self._forget(conn)
            conn.close_for(reason)

    def _forget(self, conn: C) -> None:
        self._open.discard(conn)
        self._awaiting.pop(conn, None)
        self._body.pop(conn, None)


# A13: the ids we accept from `X-Request-Id`; anything else is replaced by one of ours.
MAX_REQUEST_ID_CHARS = 128
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_CHARS}}}")


def request_id(header: str | None, new_id: Callable[[], str]) -> str:
    """The request's id: the client's `X-Request-Id` when it is 1..128 characters of
    [A-Za-z0-9._:-], else `new_id()` (the client's value is then dropped: never echoed,
    logged nor forwarded)."""
    if header is not None and _REQUEST_ID.fullmatch(header):
        return header
    return new_id()
