"""A12, A13: the edge's connection guard (deadlines, the connection limit) on a fake clock,
and which X-Request-Id values are ours to repeat."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.limits import (
    MAX_REQUEST_ID_CHARS,
    CloseReason,
    ConnectionGuard,
    EdgeLimits,
    request_id,
)
from tests.fakes.clock import FakeClock

LIMITS = EdgeLimits(
    max_connections=3,
    header_timeout_s=10.0,
    body_idle_timeout_s=30.0,
    body_timeout_s=300.0,
)


class Conn:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed_for: list[CloseReason] = []

    def close_for(self, reason: CloseReason) -> None:
        self.closed_for.append(reason)

    def __repr__(self) -> str:
        return self.name


def make(limits: EdgeLimits = LIMITS) -> tuple[ConnectionGuard[Conn], FakeClock]:
    clock = FakeClock()
    return ConnectionGuard(limits, clock), clock


def serve_one(guard: ConnectionGuard[Conn], conn: Conn) -> None:
    """A whole request on `conn`: headers, body, answer."""
    guard.request_started(conn)
    guard.headers_done(conn)
    guard.body_done(conn)
    guard.response_done(conn)


def test_a12_a_connection_that_sends_nothing_is_closed_at_the_header_deadline() -> None:
    guard, clock = make()
    conn = Conn("idle")
    assert guard.opened(conn)
    clock.advance(9.9)
    guard.sweep()
    assert conn.closed_for == []
    clock.advance(0.1)
    guard.sweep()
    assert conn.closed_for == [CloseReason.HEADER_TIMEOUT]
    assert guard.open_count == 0


def test_a12_half_sent_headers_count_from_the_connection_not_the_first_byte() -> None:
    guard, clock = make()
    conn = Conn("slow")
    guard.opened(conn)
    clock.advance(6)
    guard.request_started(conn)  # the first byte, late
    clock.advance(4)
    guard.sweep()
    assert conn.closed_for == [CloseReason.HEADER_TIMEOUT]


def test_a12_complete_headers_stop_the_header_deadline_and_an_answer_has_none() -> None:
    guard, clock = make()
    conn = Conn("busy")
    guard.opened(conn)
    guard.request_started(conn)
    guard.headers_done(conn)
    guard.body_done(conn)
    clock.advance(10_000)  # a long answer (a stream): the dispatch has its own deadlines
    guard.sweep()
    assert conn.closed_for == []


def test_a12_after_an_answer_the_next_request_has_the_header_deadline_again() -> None:
    guard, clock = make()
    conn = Conn("kept-alive")
    guard.opened(conn)
    clock.advance(5)
    serve_one(guard, conn)
    clock.advance(9)
    guard.sweep()
    assert conn.closed_for == []
    clock.advance(1)
    guard.sweep()
    assert conn.closed_for == [CloseReason.HEADER_TIMEOUT]


def test_a12_body_idle_deadline_restarts_with_each_byte() -> None:
    guard, clock = make()
    conn = Conn("uploader")
    guard.opened(conn)
    guard.headers_done(conn)
    for _ in range(5):
        clock.advance(29)
        guard.body_received(conn)
        guard.sweep()
    assert conn.closed_for == []
    clock.advance(30)
    guard.sweep()
    assert conn.closed_for == [CloseReason.BODY_TIMEOUT]


def test_a12_a_trickled_body_must_still_end_within_the_body_deadline() -> None:
    guard, clock = make()
    conn = Conn("trickle")
    guard.opened(conn)
    guard.headers_done(conn)
    for _ in range(10):  # one byte every 29 s never trips the idle deadline...
        clock.advance(29)
        guard.body_received(conn)
        guard.sweep()
    assert conn.closed_for == []
    clock.advance(11)  # ...but 300 s after the headers the body is over
    guard.body_received(conn)
    guard.sweep()
    assert conn.closed_for == [CloseReason.BODY_TIMEOUT]


def test_a12_a_body_still_arriving_after_the_answer_has_the_header_deadline() -> None:
    # An answer that did not need the body (401, 413): what is left of it is drained
    # under the header deadline, not the long body ones, and the connection can be evicted.
    guard, clock = make()
    conn = Conn("refused")
    guard.opened(conn)
    guard.headers_done(conn)
    guard.response_done(conn)
    clock.advance(5)
    guard.body_received(conn)
    clock.advance(5)
    guard.sweep()
    assert conn.closed_for == [CloseReason.HEADER_TIMEOUT]


def test_a12_at_the_limit_the_connection_waiting_longest_for_a_request_gives_way() -> None:
    guard, clock = make()
    busy, old, young = Conn("busy"), Conn("old"), Conn("young")
    for conn in (busy, old, young):
        assert guard.opened(conn)
        clock.advance(1)
    guard.request_started(busy)
    guard.headers_done(busy)
    guard.body_done(busy)
    newcomer = Conn("new")
    assert guard.opened(newcomer)
    assert old.closed_for == [CloseReason.EVICTED]
    assert busy.closed_for == young.closed_for == []
    assert guard.open_count == 3
    assert guard.opened(Conn("newer"))
    assert young.closed_for == [CloseReason.EVICTED]


def test_a12_at_the_limit_with_every_connection_busy_the_new_one_is_refused() -> None:
    guard, _ = make()
    conns = [Conn(f"busy{i}") for i in range(3)]
    for conn in conns:
        guard.opened(conn)
        guard.headers_done(conn)  # answered or sending a body: nothing to give up
    late = Conn("late")
    assert not guard.opened(late)
    assert all(c.closed_for == [] for c in conns)
    assert guard.open_count == 3
    guard.closed(conns[0])
    assert guard.opened(late)


def test_a12_a_closed_or_evicted_connection_is_forgotten() -> None:
    guard, clock = make()
    conn = Conn("gone")
    guard.opened(conn)
    guard.closed(conn)
    clock.advance(1000)
    guard.sweep()
    assert conn.closed_for == []
    # Reports after the end change nothing (the glue may still see parser events).
    guard.request_started(conn)
    guard.headers_done(conn)
    guard.response_done(conn)
    assert guard.open_count == 0


def test_a12_a_pipelined_request_gets_its_own_header_deadline() -> None:
    guard, clock = make()
    conn = Conn("pipelined")
    guard.opened(conn)
    guard.request_started(conn)
    guard.headers_done(conn)
    guard.body_done(conn)
    clock.advance(100)  # answering the first request
    guard.request_started(conn)  # the second begins while the first is answered
    clock.advance(10)
    guard.sweep()
    assert conn.closed_for == [CloseReason.HEADER_TIMEOUT]


def test_a12_sweeping_is_kept_within_a_quarter_of_the_shortest_deadline() -> None:
    assert EdgeLimits().sweep_interval_s == 1.0
    assert EdgeLimits(header_timeout_s=2).sweep_interval_s == 0.5
    assert EdgeLimits(header_timeout_s=0.1).sweep_interval_s == 0.05


@pytest.mark.parametrize(
    "value", ["abc", "chaos-17", "req_0f.x:y-z", "A" * MAX_REQUEST_ID_CHARS, "0"]
)
def test_a13_a_short_plain_request_id_is_kept(value: str) -> None:
    assert request_id(value, lambda: "ours") == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "A" * (MAX_REQUEST_ID_CHARS + 1),
        "with space",
        "new\nline",
        "crlf\r\nX-Injected: 1",
        "tab\t",
        'quote"',
        "ünïcode",
        "slash/and?query",
        "x" * 100_000,
    ],
)
def test_a13_anything_else_is_replaced_by_our_own(value: str | None) -> None:
    assert request_id(value, lambda: "ours") == "ours"


@given(st.text(max_size=200))
def test_a13_an_accepted_id_is_always_short_printable_ascii(value: str) -> None:
    got = request_id(value, lambda: "ours")
    assert got == "ours" or (
        len(got) <= MAX_REQUEST_ID_CHARS
        and all(c.isascii() and (c.isalnum() or c in "._:-") for c in got)
    )
