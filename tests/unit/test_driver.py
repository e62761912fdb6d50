"""The dispatch driver over fake links and registry: B12 and link-id hygiene."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from contract import dispatcher_pb2
from dispatcher_svc.dispatch.actions import SUCCESS
from dispatcher_svc.dispatch.driver import DispatchRun
from dispatcher_svc.dispatch.metrics import DispatchMetrics
from dispatcher_svc.dispatch.state import DispatchSettings
from dispatcher_svc.link import LinkChunk, LinkDisconnected
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


def make_run(links: FakeLinks, registry: FakeRegistry, **settings: Any) -> DispatchRun:
    """A run over the fakes, passed as the driver's ports (no casts: they fit the Protocols)."""
    return DispatchRun(
        dispatcher_pb2.DispatchRequest(request_id="same-id", model="m", body=b"{}"),
        DispatchSettings(**settings),
        links,
        registry,
        DispatchMetrics(CollectorRegistry()),
        queue_wait_s=1.0,
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
