"""Every gateway error, and the one place that turns them into HTTP responses (A2, A3, B11)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from starlette.responses import Response

# HTTP status -> (OpenAI error type, Anthropic error type)
_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "authentication_error"),
    403: ("permission_error", "permission_error"),
    404: ("not_found_error", "not_found_error"),
    405: ("invalid_request_error", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_error"),
    500: ("server_error", "api_error"),
    502: ("server_error", "api_error"),
    503: ("server_error", "overloaded_error"),
    504: ("timeout_error", "api_error"),
}


@dataclass
class ApiError(Exception):
    """An error answered before any byte of a response was written."""

    status: int
    code: str
    message: str
    param: str | None = None
    retry_after_s: float = 0.0

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def bad_request(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, code, message, param)


def error_types(status: int) -> tuple[str, str]:
    return _TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", "api_error")
    )


def openai_body(err: ApiError) -> dict[str, object]:
    return {
        "error": {
            "type": error_types(err.status)[0],
            "message": err.message,
            "code": err.code,
            "param": err.param,
        }
    }


def anthropic_body(err: ApiError) -> dict[str, object]:
    return {"type": "error", "error": {"type": error_types(err.status)[1], "message": err.message}}


def error_response(err: ApiError, *, anthropic: bool, request_id: str | None = None) -> Response:
    body = anthropic_body(err) if anthropic else openai_body(err)
    headers: dict[str, str] = {}
    if err.status in (429, 503) or err.retry_after_s > 0:
        headers["Retry-After"] = str(max(1, math.ceil(err.retry_after_s or 2)))
    if request_id:
        headers["X-Request-Id"] = request_id
    return Response(
        json.dumps(body), status_code=err.status, media_type="application/json", headers=headers
    )


def from_failed(status: int, code: str, message: str, retry_after_s: float) -> ApiError:
    """The dispatcher's pre-commit `Failed` -> an error response (B11)."""
    status = status if 400 <= status <= 599 else 502
    param = "model" if code == "model_not_found" else None
    return ApiError(
        status, code or "provider_error", message or "provider error", param, retry_after_s
    )
