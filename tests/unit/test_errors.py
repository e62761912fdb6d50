"""The one error vocabulary (docs/errors.md): every code crosses the wire intact, and every
dialect renders every error, before commit and in band after it (A2, B3, B11)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract import dispatcher_pb2, registry_pb2
from contract import hedgerow_common_pb2 as common_pb2
from contract.errors import ErrorCode, Failure
from gateway.canonical import CanonicalRequest
from gateway.dialects.registry import CHAT, COMPLETIONS, MESSAGES, RESPONSES
from gateway.errors import ApiError, error_response

DIALECTS = (CHAT, COMPLETIONS, RESPONSES, MESSAGES)


def test_every_code_has_a_wire_value_and_a_client_status() -> None:
    wire = {v for v in common_pb2.ErrorCode.values() if v != 0}
    assert len(wire) == len(ErrorCode)
    for code in ErrorCode:
        assert 400 <= code.status <= 599
        failure = Failure(code, "why", retry_after_s=3.0)
        assert Failure.from_proto(failure.to_proto()) == failure


def test_a_providers_own_status_travels_with_its_code() -> None:
    failure = Failure(ErrorCode.PROVIDER_ERROR, "boom", 500)
    assert Failure.from_proto(failure.to_proto()).status == 500
    # No usable status: the code's own.
    assert Failure(ErrorCode.PROVIDER_ERROR, "boom", 200).status == 502


def test_an_unknown_code_from_a_newer_peer_reads_as_a_provider_error() -> None:
    error = common_pb2.Error(status=502, message="?")
    error.code = 999  # type: ignore[assignment]
    assert Failure.from_proto(error).code is ErrorCode.PROVIDER_ERROR


@pytest.mark.parametrize("status", [429, 503])
def test_a7_retry_after_is_told_where_waiting_helps(status: int) -> None:
    err = ApiError(ErrorCode.RATE_LIMIT_EXCEEDED, "slow down", status=status)
    assert err.failure.retry_after_header == "2"
    err = ApiError(ErrorCode.MODEL_UNAVAILABLE, "none", status=status, retry_after_s=6.5)
    assert err.failure.retry_after_header == "7"
    assert ApiError(ErrorCode.INVALID_REQUEST, "bad").failure.retry_after_header is None


@pytest.mark.parametrize("code", list(ErrorCode))
@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_a2_every_dialect_renders_every_code_before_commit(dialect, code: ErrorCode) -> None:
    err = ApiError(
        code, "what happened", param="model" if code is ErrorCode.MODEL_NOT_FOUND else None
    )
    response = error_response(err, dialect.error_body, request_id="req_1")
    body = json.loads(bytes(response.body))
    assert response.status_code == code.status
    assert response.headers["X-Request-Id"] == "req_1"
    if dialect is MESSAGES:
        assert body["type"] == "error"
        assert body["error"]["message"] == "what happened" and body["error"]["type"]
    else:
        assert body["error"]["code"] == code.value
        assert body["error"]["message"] == "what happened" and body["error"]["type"]


def _events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


@pytest.mark.parametrize(
    "code", [ErrorCode.PROVIDER_ERROR, ErrorCode.TIMEOUT, ErrorCode.SHUTTING_DOWN]
)
@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_b3_every_dialect_renders_an_in_band_error_with_its_code(dialect, code: ErrorCode) -> None:
    req = CanonicalRequest("m", b"{}", False, False, False, 1, 8, True, False)
    renderer = dialect.stream(req)
    raw = renderer.error(ApiError(code, "mid-stream"))
    events = _events(raw)
    assert events, raw
    if dialect is MESSAGES:
        assert events[-1]["type"] == "error"
        assert events[-1]["error"]["message"] == "mid-stream"
    elif dialect is RESPONSES:
        kinds = [e["type"] for e in events]
        assert kinds[-2:] == ["error", "response.failed"]
        assert events[-2]["code"] == code.value
    else:
        assert raw.endswith(b"data: [DONE]\n\n")
        error = events[-1]["error"]
        assert error["code"] == code.value and error["status"] == code.status


def _older_error(field: int) -> bytes:
    """A message of the schema before the one vocabulary: `field` held {1: int32 status,
    2: string code, 3: string message} (Failed, StreamError, SlotRefusal)."""
    inner = b"\x08\xad\x03" + b"\x12\x13rate_limit_exceeded" + b"\x1a\x04busy"
    return bytes([(field << 3) | 2, len(inner)]) + inner


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (dispatcher_pb2.DispatchEvent, 5),
        (dispatcher_pb2.DispatchEvent, 6),
        (registry_pb2.SlotAnswer, 4),
    ],
)
def test_an_older_peers_error_is_never_misread_as_ours(message: Any, field: int) -> None:
    """Field numbers are never reused: mid-rollout, an old peer's error is an unknown
    field (the reader sees no answer, and fails it as such), never a wrong status."""
    parsed = message.FromString(_older_error(field))
    assert (
        parsed.WhichOneof("event" if message is dispatcher_pb2.DispatchEvent else "answer") is None
    )


@pytest.mark.parametrize("code", list(ErrorCode))
def test_b3_responses_in_band_errors_parse_with_the_official_sdk(code: ErrorCode) -> None:
    """The OpenAI SDK's own models accept what the Responses stream sends after commit: its
    `response.failed` error code is one of the SDK's enum, whatever our code."""
    from openai.types.responses import ResponseErrorEvent, ResponseFailedEvent

    req = CanonicalRequest("m", b"{}", False, False, False, 1, 8, True, False)
    events = _events(RESPONSES.stream(req).error(ApiError(code, "mid-stream")))
    error_event, failed = events[-2], events[-1]
    ResponseErrorEvent.model_validate(error_event, strict=False)
    parsed = ResponseFailedEvent.model_validate(failed, strict=False)
    assert parsed.response.error is not None
    assert parsed.response.error.message == "mid-stream"
