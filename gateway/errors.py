"""Every error the gateway answers, and the one place that renders them (A2, A3, B3, B11).

An error is a `contract.errors.Failure` (code, status, message, retry-after), born here or
told by the dispatcher; `ApiError` raises one through the pipeline with the request field at
fault. Two body shapes exist: OpenAI's (chat, completions, Responses) and Anthropic's
(Messages). `openai_error_body` and `anthropic_error_body` build them; each dialect names
its own (`Dialect.error_body`), and every rendering — the HTTP error response before
commit, the error event inside a stream after it — is made from that one function.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.responses import Response

from contract.errors import ErrorCode, Failure

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


class ApiError(Exception):
    """A failure raised through the gateway's pipeline; `param` names the field at fault."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int = 0,
        param: str | None = None,
        retry_after_s: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.failure = Failure(code, message, status, retry_after_s)
        self.param = param

    @classmethod
    def of(cls, failure: Failure, param: str | None = None) -> ApiError:
        return cls(
            failure.code,
            failure.message,
            status=failure.status,
            param=param,
            retry_after_s=failure.retry_after_s,
        )

    @property
    def status(self) -> int:
        return self.failure.status

    @property
    def code(self) -> ErrorCode:
        return self.failure.code

    @property
    def message(self) -> str:
        return self.failure.message

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(ErrorCode.INVALID_REQUEST, message, param=param)


def error_types(status: int) -> tuple[str, str]:
    return _TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", "api_error")
    )


def openai_error_body(err: ApiError) -> dict[str, Any]:
    """OpenAI's error body (chat, completions, Responses)."""
    return {
        "error": {
            "type": error_types(err.status)[0],
            "message": err.message,
            "code": err.code.value,
            "param": err.param,
        }
    }


def anthropic_error_body(err: ApiError) -> dict[str, Any]:
    """Anthropic's error body (Messages)."""
    return {"type": "error", "error": {"type": error_types(err.status)[1], "message": err.message}}


ErrorBody = Callable[[ApiError], dict[str, Any]]


def error_response(
    err: ApiError, error_body: ErrorBody, *, request_id: str | None = None
) -> Response:
    """The HTTP answer to a request that failed before any byte was written."""
    headers: dict[str, str] = {}
    if (retry_after := err.failure.retry_after_header) is not None:
        headers["Retry-After"] = retry_after
    if request_id:
        headers["X-Request-Id"] = request_id
    return Response(
        json.dumps(error_body(err)),
        status_code=err.status,
        media_type="application/json",
        headers=headers,
    )


def error_body_for_path(path: str) -> ErrorBody:
    """For answers outside a dialect's pipeline (404s, /v1/models): Anthropic's shape under
    its own path, OpenAI's everywhere else."""
    return anthropic_error_body if path.startswith("/v1/messages") else openai_error_body
