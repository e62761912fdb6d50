"""The one error vocabulary (docs/errors.md).

Every refusal and failure in Hedgerow is an `ErrorCode` with the HTTP status the client will
see, a human message and, where waiting helps, a retry-after. It is born where the error
arises (the gateway's checks, a registry refusal, the dispatch machine), travels between
services as `hedgerow.Error` (`to_proto` / `from_proto`), and is rendered in the client's
dialect by the gateway, in one function per dialect. The code's value is its public name:
the `code` field of an OpenAI error body.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from contract import hedgerow_common_pb2 as common_pb2


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    INVALID_API_KEY = "invalid_api_key"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    MODEL_UNAVAILABLE = "model_unavailable"
    MODEL_TOO_LARGE = "model_too_large"
    PROVIDER_ERROR = "provider_error"
    TIMEOUT = "timeout"
    SHUTTING_DOWN = "shutting_down"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"

    @property
    def status(self) -> int:
        """The HTTP status this code has unless its origin knows better (a provider's own)."""
        return _STATUS[self]


_STATUS: Final[dict[ErrorCode, int]] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_API_KEY: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.MODEL_UNAVAILABLE: 503,
    ErrorCode.MODEL_TOO_LARGE: 503,
    ErrorCode.PROVIDER_ERROR: 502,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
}

# The default retry-after for a 429 or 503 that names none (docs/behavior.md constants).
DEFAULT_RETRY_AFTER_S: Final = 2.0

_TO_PROTO: Final[dict[ErrorCode, int]] = {
    code: common_pb2.ErrorCode.Value(f"ERROR_CODE_{code.name}") for code in ErrorCode
}
_FROM_PROTO: Final[dict[int, ErrorCode]] = {value: code for code, value in _TO_PROTO.items()}


@dataclass(frozen=True, slots=True)
class Failure:
    """An error as it travels: what went wrong, the status the client sees, and when to
    try again (0: no advice)."""

    code: ErrorCode
    message: str
    status: int = 0  # 0: the code's own status
    retry_after_s: float = 0.0

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            object.__setattr__(self, "status", self.code.status)

    @property
    def retry_after_header(self) -> str | None:
        """`Retry-After` (whole seconds, at least 1) for statuses where waiting helps."""
        if self.status in (429, 503) or self.retry_after_s > 0:
            return str(max(1, math.ceil(self.retry_after_s or DEFAULT_RETRY_AFTER_S)))
        return None

    def to_proto(self) -> common_pb2.Error:
        return common_pb2.Error(
            code=_TO_PROTO[self.code],  # type: ignore[arg-type]
            status=self.status,
            message=self.message,
            retry_after_s=self.retry_after_s,
        )

    @classmethod
    def from_proto(cls, error: common_pb2.Error) -> Failure:
        """An unknown or missing code (a newer or older peer) reads as a provider error."""
        code = _FROM_PROTO.get(error.code, ErrorCode.PROVIDER_ERROR)
        return cls(
            code, error.message or code.value.replace("_", " "), error.status, error.retry_after_s
        )
