"""After commit (B3): the relay's answer to every way a committed dispatch can go wrong, in
a stream and in an assembled body, each counted once as an in-band error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from contract import dispatcher_pb2
from contract.errors import ErrorCode, Failure
from gateway.canonical import CanonicalRequest
from gateway.dialects.registry import CHAT, MESSAGES, RESPONSES
from gateway.errors import ApiError
from gateway.metrics import GatewayMetrics
from gateway.relay import Relay

CONTENT = b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}'


class _Call:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Events:
    """A committed dispatch's events, then `end`: an event or an error raised on reading."""

    def __init__(self, events: Sequence[dispatcher_pb2.DispatchEvent], end: Any) -> None:
        self.call = _Call()
        self._events = list(events)
        self._end = end

    async def next(self) -> dispatcher_pb2.DispatchEvent:
        if self._events:
            return self._events.pop(0)
        if isinstance(self._end, ApiError):
            raise self._end
        return self._end  # type: ignore[no-any-return]

    async def batch(self) -> list[dispatcher_pb2.DispatchEvent]:
        return [await self.next()]


def chunks(*payloads: bytes) -> dispatcher_pb2.DispatchEvent:
    return dispatcher_pb2.DispatchEvent(chunks=dispatcher_pb2.Chunks(chunks=list(payloads)))


def stream_error(failure: Failure) -> dispatcher_pb2.DispatchEvent:
    return dispatcher_pb2.DispatchEvent(stream_error=failure.to_proto())


GONE = ApiError(ErrorCode.SERVICE_UNAVAILABLE, "dispatcher unavailable")
REQ = CanonicalRequest("m", b"{}", False, False, False, 1, 8, True, False)


def in_band(metrics: GatewayMetrics, endpoint: str) -> float:
    return metrics.in_band_errors.labels(endpoint)._value.get()  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(
    ("end", "status", "code"),
    [
        (stream_error(Failure(ErrorCode.PROVIDER_ERROR, "boom", 500)), 500, "provider_error"),
        (stream_error(Failure(ErrorCode.TIMEOUT, "idle")), 504, "timeout"),
        # a provider's 4xx after commit: the provider failed mid-answer
        (stream_error(Failure(ErrorCode.INVALID_REQUEST, "bad", 400)), 502, "provider_error"),
        (chunks(b"not json"), 502, "provider_error"),
        (GONE, 503, "service_unavailable"),
    ],
)
async def test_b3_an_assembled_body_fails_with_an_honest_status(
    end: Any, status: int, code: str
) -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    events = _Events([chunks(CONTENT)], end)
    with pytest.raises(ApiError) as failed:
        await Relay(metrics).assemble(events, CHAT, REQ)  # type: ignore[arg-type]
    assert (failed.value.status, failed.value.code) == (status, code)
    assert in_band(metrics, "chat") == 1


@pytest.mark.parametrize("dialect", [CHAT, RESPONSES, MESSAGES], ids=lambda d: d.name)
@pytest.mark.parametrize(
    "end",
    [
        stream_error(Failure(ErrorCode.PROVIDER_ERROR, "boom", 500)),
        chunks(b"[1, 2]"),
        GONE,
    ],
)
async def test_b3_a_stream_ends_with_one_in_band_error_counted_once(dialect, end: Any) -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    events = _Events([chunks(CONTENT)], end)
    out = [part async for part in Relay(metrics).stream(events, dialect, REQ)]  # type: ignore[arg-type]
    body = b"".join(out)
    assert b"error" in body and body.count(b"data: [DONE]") == (1 if dialect is CHAT else 0)
    assert in_band(metrics, dialect.name) == 1
    assert events.call.cancelled


async def test_a_stream_that_completes_counts_no_error() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    done = dispatcher_pb2.DispatchEvent(completed=dispatcher_pb2.Completed())
    events = _Events([chunks(CONTENT)], done)
    body = b"".join([p async for p in Relay(metrics).stream(events, CHAT, REQ)])  # type: ignore[arg-type]
    assert body.endswith(b"data: [DONE]\n\n") and b"error" not in body
    assert in_band(metrics, "chat") == 0
