"""The dispatch driver over fake links and registry: B12 and link-id hygiene."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from contract import dispatcher_pb2
from contract import hedgerow_common_pb2 as common_pb2
from dispatcher_svc.dispatch.actions import CANCELLED, SUCCESS
from dispatcher_svc.dispatch.attempt import MAX_ERROR_MESSAGE_CHARS
from dispatcher_svc.dispatch.driver import DispatchRun
from dispatcher_svc.dispatch.metrics import DispatchMetrics
from dispatcher_svc.dispatch.speed import ColdLoads
from dispatcher_svc.dispatch.state import DispatchSettings
from dispatcher_svc.link import (
    LinkAccepted,
    LinkChunk,
    LinkComplete,
    LinkDisconnected,
    LinkError,
    LinkEvent,
)
from dispatcher_svc.registry_client import Speed
from tests.fakes.driver_ports import (
    CONTENT,
    DONE,
    STALL,
    FakeAttempt,
    FakeLinks,
    FakeRegistry,
    FakeSession,
)


class LateAttempt(FakeAttempt):
    """Its first event arrives one loop tick late: in the same inbox batch as the timer."""

    first = True

    async def next_event(self) -> Any:
        if self.first:
            self.first = False
            await asyncio.sleep(0)
        return await super().next_event()


class RecordingSession(FakeSession):
    def __init__(self, script: Any, ids: list[str], late: bool = False) -> None:
        super().__init__(script)
        self.ids = ids
        self.late = late

    async def start_attempt(self, attempt_id: str, body: bytes, *, completions: bool) -> Any:
        self.ids.append(attempt_id)
        return (LateAttempt if self.late else FakeAttempt)(attempt_id, self.script)


def make_run(
    links: FakeLinks | TimedLinks,
    registry: FakeRegistry,
    *,
    cold_loads: ColdLoads | None = None,
    max_chunk_bytes: int = 1024 * 1024,
    **settings: Any,
) -> DispatchRun:
    """A run over the fakes, passed as the driver's ports (no casts: they fit the Protocols)."""
    return DispatchRun(
        dispatcher_pb2.DispatchRequest(request_id="same-id", model="m", body=b"{}"),
        DispatchSettings(**settings),
        links,
        registry,
        DispatchMetrics(CollectorRegistry()),
        queue_wait_s=1.0,
        cold_loads=cold_loads,
        max_chunk_bytes=max_chunk_bytes,
    )


async def test_b12_a_reserve_aborted_before_it_started_still_ends_the_run() -> None:
    """The race timer and the first content in one batch: the machine reserves a backup and
    aborts it in the same step. The run must still finish (it once waited forever)."""
    ids: list[str] = []
    links = FakeLinks({"a": [LinkChunk(CONTENT), DONE], "b": [STALL]})
    links.sessions["a"] = RecordingSession(links.sessions["a"].script, ids, late=True)
    registry = FakeRegistry(["a", "b"])
    run = make_run(links, registry, speculative_ratio=0.0)
    kinds: list[str | None] = []
    async with asyncio.timeout(5):
        async for batch in run.run():
            kinds.extend(event.WhichOneof("event") for event in batch)
    assert kinds[0] == "committed" and kinds[-1] == "completed"
    assert ("r-a", SUCCESS) in registry.released


async def test_f2_link_ids_are_unique_even_when_clients_reuse_a_request_id() -> None:
    ids: list[str] = []
    for _ in range(2):
        links = FakeLinks({"a": [LinkChunk(CONTENT), DONE]})
        links.sessions["a"] = RecordingSession(links.sessions["a"].script, ids)
        async with asyncio.timeout(5):
            async for _batch in make_run(links, FakeRegistry(["a"])).run():
                pass
    assert len(ids) == 2 and ids[0] != ids[1]
    assert all(i.startswith("same-id.1.") for i in ids)


async def test_b1_commit_travels_with_the_held_preamble_in_one_message() -> None:
    """The events of one dispatch step are one gRPC message: Committed, the held role chunk
    and the first content reach the gateway together (each chunk still its own event)."""
    role = b'{"choices":[{"index":0,"delta":{"role":"assistant"}}]}'
    links = FakeLinks({"a": [LinkChunk(role), LinkChunk(CONTENT), DONE]})
    batches: list[list[dispatcher_pb2.DispatchEvent]] = []
    async with asyncio.timeout(5):
        async for batch in make_run(links, FakeRegistry(["a"])).run():
            batches.append(batch)
    first = batches[0]
    assert first[0].WhichOneof("event") == "committed"
    assert [c for e in first[1:] for c in e.chunks.chunks] == [role, CONTENT]
    assert batches[-1][-1].WhichOneof("event") == "completed"


async def test_b9_a_stream_that_ends_without_complete_is_not_a_success() -> None:
    """What the driver feeds when an attempt's stream just ends (`LinkDisconnected`): after
    content the gateway gets an in-band error and the registry a 502 strike, not success."""
    links = FakeLinks({"a": [LinkChunk(CONTENT), LinkDisconnected()]})
    registry = FakeRegistry(["a"])
    kinds: list[str | None] = []
    async with asyncio.timeout(5):
        async for batch in make_run(links, registry).run():
            kinds.extend(event.WhichOneof("event") for event in batch)
    assert kinds == ["committed", "chunks", "stream_error"]
    assert registry.released == [("r-a", 502)]


# ---- what the driver measures and believes (B6, C5) and the chunk cap -------------------


class TimedAttempt(FakeAttempt):
    """A scripted attempt whose script may hold pauses (floats, seconds) between events,
    and that records whether it was told Cancel."""

    def __init__(self, attempt_id: str, script: Sequence[LinkEvent | str | float]) -> None:
        super().__init__(attempt_id, [])
        self.script = list(script)
        self.cancelled = False

    async def next_event(self) -> LinkEvent:
        while self.script:
            step = self.script.pop(0)
            if isinstance(step, float):
                await asyncio.sleep(step)
                continue
            if step == STALL:
                break
            assert not isinstance(step, str)
            return step
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def cancel(self) -> None:
        self.cancelled = True


class TimedSession(FakeSession):
    """One provider session: every attempt on it plays the next script of `scripts`."""

    def __init__(self, *scripts: Sequence[LinkEvent | str | float]) -> None:
        super().__init__([])
        self.scripts = list(scripts)
        self.attempts: list[TimedAttempt] = []

    async def start_attempt(self, attempt_id: str, body: bytes, *, completions: bool) -> Any:
        attempt = TimedAttempt(attempt_id, self.scripts.pop(0))
        self.attempts.append(attempt)
        return attempt


class TimedLinks:
    def __init__(self, **sessions: TimedSession) -> None:
        self.sessions = dict(sessions)

    def get(self, provider_id: str) -> TimedSession | None:
        return self.sessions.get(provider_id)


async def drive(run: DispatchRun) -> list[dispatcher_pb2.DispatchEvent]:
    events: list[dispatcher_pb2.DispatchEvent] = []
    async with asyncio.timeout(10):
        async for batch in run.run():
            events.extend(batch)
    return events


def kinds(events: list[dispatcher_pb2.DispatchEvent]) -> list[str | None]:
    return [e.WhichOneof("event") for e in events]


def text_chunk(text: str) -> LinkChunk:
    return LinkChunk(json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode())


ROLE = LinkChunk(b'{"choices":[{"index":0,"delta":{"role":"assistant"}}]}')


async def test_c5_release_carries_the_measured_first_content_and_decode_rate() -> None:
    # Preamble, then first content 0.1 s after the send, then 10 more chunks over ~0.2 s.
    # The usage claims a million tokens: more than 16 per chunk is not believed.
    many = LinkComplete(common_pb2.Usage(completion_tokens=1_000_000))
    script: list[LinkEvent | str | float] = [ROLE, 0.1, text_chunk("a")]
    for i in range(10):
        script += [0.02, text_chunk(f" {i}")]
    links = TimedLinks(a=TimedSession([*script, many]))
    registry = FakeRegistry(["a"])
    assert kinds(await drive(make_run(links, registry)))[-1] == "completed"
    speed = registry.speeds["r-a"]
    assert speed is not None and not speed.no_content
    assert speed.ttft_s is not None and 0.09 <= speed.ttft_s < 0.5
    assert 10 / 0.5 < speed.decode_tps <= 10 / 0.19, "11 chunks, 10 after the first"


async def test_c5_a_primary_overtaken_after_the_race_point_is_a_slow_sample() -> None:
    """The silent provider's request: the backup's first content wins; the primary had
    nothing to show after the race point, so its Release says so (never success)."""
    links = TimedLinks(
        silent=TimedSession([STALL]), honest=TimedSession([0.01, text_chunk("hi"), DONE])
    )
    registry = FakeRegistry(["silent", "honest"])
    run = make_run(links, registry, ttft_base_s=0.4, ttft_per_token_s=0.0, speculative_ratio=0.25)
    assert kinds(await drive(run))[-1] == "completed"
    assert dict(registry.released) == {"r-silent": CANCELLED, "r-honest": SUCCESS}
    slow = registry.speeds["r-silent"]
    assert slow == Speed(ttft_s=0.4, no_content=True, decode_tps=0.0), "valued at the deadline"
    honest = registry.speeds["r-honest"]
    assert honest is not None and honest.ttft_s is not None and not honest.no_content
    assert links.sessions["silent"].attempts[0].cancelled, "the loser is told Cancel"


async def test_b6_accepted_is_believed_once_per_session_and_model() -> None:
    """The first Accepted of a (session, model) gets the cold-load budget; once the
    provider has delivered content for that model, Accepted is a lie and the attempt keeps
    its normal deadline (it would otherwise hold the request for the inference timeout)."""
    session = TimedSession(
        [LinkAccepted(), 0.3, text_chunk("loaded"), DONE],  # cold load: 0.3 s > deadline
        [LinkAccepted(), STALL],  # the same model again: a lie
    )
    links = TimedLinks(a=session)
    cold_loads = ColdLoads(budget_s=5.0)
    settings: dict[str, Any] = dict(
        ttft_base_s=0.15,
        ttft_per_token_s=0.0,
        speculative_ratio=1.0,
        inference_timeout_s=5.0,
        max_dispatch_attempts=1,
    )
    first = make_run(links, FakeRegistry(["a"]), cold_loads=cold_loads, **settings)
    assert kinds(await drive(first))[-1] == "completed", "the promise was kept in its budget"
    second = make_run(links, FakeRegistry(["a"]), cold_loads=cold_loads, **settings)
    started = time.monotonic()
    events = await drive(second)
    assert kinds(events) == ["failed"] and events[0].failed.status == 504
    assert time.monotonic() - started < 1.0, "the normal deadline, not the inference timeout"


async def test_b6_an_accepted_attempt_is_still_raced_and_the_backups_content_wins() -> None:
    """The Accepted-forever liar: a backup still goes out at the usual point, and the
    request ends in its normal time, not after the inference timeout."""
    links = TimedLinks(
        liar=TimedSession([LinkAccepted(), STALL]), honest=TimedSession([text_chunk("x"), DONE])
    )
    registry = FakeRegistry(["liar", "honest"])
    run = make_run(
        links,
        registry,
        ttft_base_s=0.2,
        ttft_per_token_s=0.0,
        speculative_ratio=0.5,
        inference_timeout_s=30.0,
    )
    started = time.monotonic()
    assert kinds(await drive(run))[-1] == "completed"
    assert time.monotonic() - started < 2.0
    assert dict(registry.released) == {"r-liar": CANCELLED, "r-honest": SUCCESS}
    liar = registry.speeds["r-liar"]
    assert liar is not None and liar.no_content, "a broken-or-not promise with nothing: slow"


async def test_isolation_an_oversized_chunk_fails_its_own_attempt_and_charges_it() -> None:
    big = LinkChunk(b"x" * 2048)
    links = TimedLinks(a=TimedSession([big, DONE]), b=TimedSession([text_chunk("ok"), DONE]))
    registry = FakeRegistry(["a", "b"])
    run = make_run(links, registry, max_chunk_bytes=1024)
    events = await drive(run)
    assert kinds(events) == ["committed", "chunks", "completed"], "failed over invisibly"
    assert ("r-a", 502) in registry.released and ("r-b", SUCCESS) in registry.released
    assert links.sessions["a"].attempts[0].cancelled, "the provider is told to stop"
    assert all(len(c) <= 1024 for e in events for c in e.chunks.chunks)


async def test_isolation_an_oversized_chunk_after_commit_is_an_in_band_502() -> None:
    links = TimedLinks(a=TimedSession([text_chunk("ok"), LinkChunk(b"y" * 4096), DONE]))
    registry = FakeRegistry(["a"])
    events = await drive(make_run(links, registry, max_chunk_bytes=1024))
    assert kinds(events) == ["committed", "chunks", "stream_error"]
    assert events[-1].stream_error.status == 502
    assert registry.released == [("r-a", 502)]


async def test_a_providers_error_text_is_cut() -> None:
    links = TimedLinks(a=TimedSession([LinkError(500, "E" * 100_000)]))
    events = await drive(make_run(links, FakeRegistry(["a"]), max_dispatch_attempts=1))
    assert kinds(events) == ["failed"]
    assert 0 < len(events[0].failed.message) <= MAX_ERROR_MESSAGE_CHARS
