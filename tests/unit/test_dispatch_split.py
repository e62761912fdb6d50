"""One dispatch step's events over `Dispatches` messages of a bounded size
(`dispatcher_svc.servicer.split`): no provider output can make a message the stream shared by
every other request cannot carry, and nothing is lost, reordered or merged on the way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from contract import dispatcher_pb2
from dispatcher_svc.servicer import split

DEvent = dispatcher_pb2.DispatchEvent
BUDGET = 4096


def chunks(*sizes: int) -> DEvent:
    return DEvent(chunks=dispatcher_pb2.Chunks(chunks=[b"c" * n for n in sizes]))


COMMITTED = DEvent(committed=dispatcher_pb2.Committed(provider_id="p", attempts=1))
COMPLETED = DEvent(completed=dispatcher_pb2.Completed())


def flatten(events: list[DEvent]) -> list[tuple[str, bytes]]:
    """Each event as (kind, payload), a chunks event as one entry per chunk: what the
    gateway renders, whatever the grouping."""
    out: list[tuple[str, bytes]] = []
    for event in events:
        kind = event.WhichOneof("event") or ""
        if kind == "chunks":
            out.extend(("chunk", c) for c in event.chunks.chunks)
        else:
            out.append((kind, event.SerializeToString()))
    return out


def message_size(part: list[DEvent]) -> int:
    out = dispatcher_pb2.DispatchOut(
        call_id=2**63, events=dispatcher_pb2.DispatchEvents(events=part), end=True
    )
    return int(out.ByteSize())


def test_isolation_a_small_step_stays_one_message() -> None:
    events = [COMMITTED, chunks(10, 20), COMPLETED]
    assert split(events, BUDGET) == [events]


def test_isolation_a_large_batch_is_split_between_chunks_in_order() -> None:
    events = [COMMITTED, chunks(*[1500] * 7), COMPLETED]
    parts = split(events, BUDGET - 64)
    assert len(parts) == 4
    assert flatten([e for part in parts for e in part]) == flatten(events)
    assert all(message_size(part) <= BUDGET for part in parts)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.just(COMMITTED),
            st.just(COMPLETED),
            st.lists(st.integers(0, BUDGET - 64 - 16), min_size=1, max_size=12).map(
                lambda sizes: chunks(*sizes)
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_isolation_every_part_fits_and_nothing_is_lost(events: list[DEvent]) -> None:
    parts = split(events, BUDGET - 64)
    assert all(parts), "no empty message"
    assert flatten([e for part in parts for e in part]) == flatten(events)
    assert all(message_size(part) <= BUDGET for part in parts)
