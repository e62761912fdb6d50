"""The `dispatcher_dispatches_total` outcome labels of issue 7: the pure mapping the machine
puts on each `Release`, and the driver counting real machine runs under it (fake registry
and fake link sessions through the driver's ports, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from contract import dispatcher_pb2
from dispatcher_svc.dispatch.actions import CANCELLED, SUCCESS, Outcome
from dispatcher_svc.dispatch.driver import DispatchRun
from dispatcher_svc.dispatch.metrics import DispatchMetrics
from dispatcher_svc.dispatch.state import DispatchSettings
from dispatcher_svc.link import (
    LinkChunk,
    LinkDisconnected,
    LinkError,
    LinkEvent,
)
from tests.fakes.driver_ports import CONTENT, DONE, STALL, FakeLinks, FakeRegistry


@pytest.mark.parametrize(
    ("status", "committed", "goes_on", "label"),
    [
        (SUCCESS, True, False, "success"),
        (CANCELLED, False, True, "cancelled"),
        (CANCELLED, True, False, "cancelled"),
        (504, False, True, "timeout"),  # a pre-content stall, failed over
        (504, False, False, "timeout"),
        (504, True, False, "timeout"),  # post-commit idle timeout
        (500, False, True, "retry_precontent"),
        (502, False, True, "retry_precontent"),  # disconnect before content
        (429, False, True, "retry_precontent"),
        (500, False, False, "failure"),  # the last attempt: nobody takes over
        (500, True, False, "failure"),  # after commit: told in-band, never retried
        (502, True, True, "failure"),
        (400, False, True, "failure"),  # B11: the request is the problem, not retried
        (413, False, True, "failure"),
        (415, False, True, "failure"),
        (422, False, True, "failure"),
    ],
)
def test_outcome_mapping(status: int, committed: bool, goes_on: bool, label: str) -> None:
    assert Outcome.of(status, committed=committed, goes_on=goes_on) == label
    assert label in DispatchMetrics.OUTCOMES


def test_every_outcome_is_exported_before_the_first_dispatch() -> None:
    registry = CollectorRegistry()
    DispatchMetrics(registry)
    for label in DispatchMetrics.OUTCOMES:
        assert registry.get_sample_value("dispatcher_dispatches_total", {"outcome": label}) == 0


# --- the driver labels what the machine decided ----------------------------------------


async def dispatch(
    scripts: dict[str, Sequence[LinkEvent | str]],
    *,
    stop_after_commit: bool = False,
    **settings: Any,
) -> dict[str, float]:
    """Run one request over the scripted providers (reserved in dict order); returns the
    non-zero `dispatches` counts by outcome."""
    prom = CollectorRegistry()
    registry = FakeRegistry(list(scripts))
    values: dict[str, Any] = dict(ttft_base_s=5.0, speculative_ratio=1.0) | settings
    run = DispatchRun(
        dispatcher_pb2.DispatchRequest(request_id="req", model="m", body=b"{}"),
        DispatchSettings(**values),
        FakeLinks(scripts),
        registry,
        DispatchMetrics(prom),
        queue_wait_s=1.0,
    )
    events = run.run()
    async with asyncio.timeout(5):
        async for batch in events:
            if stop_after_commit and any(event.HasField("chunks") for event in batch):
                await events.aclose()  # the client goes away mid-stream
                break
    assert len(registry.released) == sum(1 for p in scripts if p not in registry.queue)
    counts: dict[str, float] = {}
    for label in (*DispatchMetrics.OUTCOMES, "sent"):
        value = prom.get_sample_value("dispatcher_dispatches_total", {"outcome": label})
        if value:
            counts[label] = value
    return counts


async def test_pre_content_error_then_success() -> None:
    counts = await dispatch({"a": [LinkError(500, "boom")], "b": [LinkChunk(CONTENT), DONE]})
    assert counts == {"retry_precontent": 1, "success": 1, "sent": 2}


async def test_disconnect_before_content_is_a_retry() -> None:
    counts = await dispatch({"a": [LinkDisconnected()], "b": [LinkChunk(CONTENT), DONE]})
    assert counts == {"retry_precontent": 1, "success": 1, "sent": 2}


async def test_the_last_attempt_is_a_failure_not_a_retry() -> None:
    scripts: dict[str, Sequence[LinkEvent | str]] = {
        p: [LinkError(500, "boom")] for p in ("a", "b", "c")
    }
    counts = await dispatch(scripts, max_dispatch_attempts=3)
    assert counts == {"retry_precontent": 2, "failure": 1, "sent": 3}


async def test_non_retryable_client_error_is_a_failure() -> None:
    counts = await dispatch({"a": [LinkError(400, "bad request")], "b": [DONE]})
    assert counts == {"failure": 1, "sent": 1}


async def test_error_after_content_is_a_failure() -> None:
    counts = await dispatch({"a": [LinkChunk(CONTENT), LinkError(500, "boom")], "b": [DONE]})
    assert counts == {"failure": 1, "sent": 1}


async def test_stall_before_content_is_a_timeout() -> None:
    counts = await dispatch({"a": [STALL], "b": [LinkChunk(CONTENT), DONE]}, ttft_base_s=0.05)
    assert counts == {"timeout": 1, "success": 1, "sent": 2}


async def test_client_gone_after_commit_is_cancelled() -> None:
    counts = await dispatch({"a": [LinkChunk(CONTENT), STALL]}, stop_after_commit=True)
    assert counts == {"cancelled": 1, "sent": 1}
