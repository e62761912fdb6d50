"""What the driver measures of an attempt (B14) and which `Accepted` it believes (B6):
`dispatcher_svc.dispatch.speed`, pure, on hand-set times."""

from __future__ import annotations

import gc

import pytest

from dispatcher_svc.dispatch.actions import CANCELLED, SUCCESS, TIMEOUT, Outcome, Release
from dispatcher_svc.dispatch.speed import MIN_DECODE_S, AttemptClock, ColdLoads, measure
from dispatcher_svc.registry_client import Speed

DEADLINE_S = 5.0
DONE = Release(1, SUCCESS, Outcome.SUCCESS)


def clock(**times: float | int | bool) -> AttemptClock:
    return AttemptClock(sent_at=100.0, **times)  # type: ignore[arg-type]


def test_b14_first_content_time_since_the_send() -> None:
    times = clock(first_content_at=100.4)
    speed = measure(times, Release(1, 502, Outcome.FAILURE), DEADLINE_S)
    assert speed is not None and speed.ttft_s == pytest.approx(0.4)
    assert (speed.no_content, speed.decode_tps) == (False, 0.0)


def test_b14_a_slow_release_with_no_content_is_a_slow_sample_worth_the_deadline() -> None:
    overtaken = Release(1, CANCELLED, Outcome.CANCELLED, slow=True)
    assert measure(clock(), overtaken, DEADLINE_S) == Speed(DEADLINE_S, True, 0.0)
    stalled = Release(1, TIMEOUT, Outcome.TIMEOUT, slow=True)
    assert measure(clock(cold=True), stalled, DEADLINE_S) == Speed(DEADLINE_S, True, 0.0)


def test_b14_no_content_and_not_slow_says_nothing() -> None:
    """A client gone, a shutdown, an error before content: nothing about speed."""
    for release in (Release(1, CANCELLED, Outcome.CANCELLED), Release(1, 500, Outcome.FAILURE)):
        assert measure(clock(), release, DEADLINE_S) is None


def test_b6_b14_a_believed_cold_load_is_not_the_providers_first_content_time() -> None:
    times = clock(cold=True, first_content_at=160.0, completed_at=161.0, content_chunks=11)
    speed = measure(times, DONE, DEADLINE_S)
    assert speed is not None and speed.ttft_s is None and speed.decode_tps == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("claimed", "tps"),
    [
        (41, 40.0),  # usage believed: 40 tokens after the first, over 1 s
        (0, 10.0),  # no usage: the chunks
        (11 * 16 + 1, 10.0),  # more than 16 tokens a chunk: not believed, the chunks
    ],
)
def test_b14_decode_rate_after_the_first_content(claimed: int, tps: float) -> None:
    times = clock(
        first_content_at=100.5, completed_at=101.5, content_chunks=11, completion_tokens=claimed
    )
    speed = measure(times, DONE, DEADLINE_S)
    assert speed is not None and speed.decode_tps == pytest.approx(tps)


def test_b14_no_decode_rate_from_a_short_stream_or_an_unfinished_one() -> None:
    short = clock(first_content_at=100.5, completed_at=100.5 + MIN_DECODE_S / 2, content_chunks=9)
    speed = measure(short, DONE, DEADLINE_S)
    assert speed is not None and speed.decode_tps == 0.0
    unfinished = clock(first_content_at=100.5, completed_at=102.0, content_chunks=9)
    speed = measure(unfinished, Release(1, 502, Outcome.FAILURE), DEADLINE_S)
    assert speed is not None and speed.decode_tps == 0.0


class Session:
    """A link session: itself, weakly referenced by the memory."""


def test_b6_one_cold_load_per_session_and_model() -> None:
    loads = ColdLoads(budget_s=600.0)
    a, b = Session(), Session()
    assert loads.accepted(a, "m", now=0.0), "the first Accepted opens the cold load"
    assert loads.accepted(a, "m", now=300.0), "while it is open, the same load"
    assert not loads.accepted(a, "m", now=600.0), "its budget ran out: a lie"
    assert loads.accepted(a, "n", now=600.0), "another model has its own"
    loads.served(a, "n")
    assert not loads.accepted(a, "n", now=601.0), "served already: a lie"
    loads.served(b, "m")
    assert not loads.accepted(b, "m", now=0.0), "served before it ever said Accepted"
    assert loads.accepted(Session(), "m", now=700.0), "a new session may load cold again"


def test_b6_the_memory_goes_with_the_session() -> None:
    loads = ColdLoads(budget_s=1.0)
    session = Session()
    loads.served(session, "m")
    assert len(loads._by_session) == 1
    del session
    gc.collect()
    assert len(loads._by_session) == 0
