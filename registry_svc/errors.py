"""Registry refusals. Each class names its error code here, once (the code gives the HTTP
status, contract.errors); `failure()` is what leaves the service.

Every refusal carries a human ``message`` and, where a retry makes sense, ``retry_after_s``.
"""

from __future__ import annotations

from typing import ClassVar

from contract.errors import ErrorCode, Failure
from registry_svc.model import Shape


class RegistryError(Exception):
    """Base of every registry refusal."""

    code: ClassVar[ErrorCode] = ErrorCode.MODEL_UNAVAILABLE

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def http_status(self) -> int:
        return self.code.status

    def failure(self) -> Failure:
        return Failure(self.code, self.message, retry_after_s=float(self.retry_after_s or 0))


class UnknownModel(RegistryError):
    """No provider serves or recently served the model (A3: 404)."""

    code = ErrorCode.MODEL_NOT_FOUND


class NoCapableProvider(RegistryError):
    """A6: no online provider passes the tools (or vision) gates; fail at once, never queue."""

    def __init__(self, message: str, *, capability: Shape) -> None:
        super().__init__(message)
        self.capability = capability


class NoEligibleProvider(RegistryError):
    """A7: nothing structurally eligible (and nothing merely reconnecting)."""


class ModelTooLarge(RegistryError):
    """A7: the only providers that could serve have too small a context for the request."""

    code = ErrorCode.MODEL_TOO_LARGE


class ProvidersBusy(RegistryError):
    """Capable providers are all full and this request may not queue (a retry, B11: 429)."""

    code = ErrorCode.RATE_LIMIT_EXCEEDED


class QueueFull(RegistryError):
    """A7: the model's wait queue is full."""

    code = ErrorCode.RATE_LIMIT_EXCEEDED


class QueueTimeout(RegistryError):
    """A7: waited the whole queue budget without a free slot."""

    code = ErrorCode.RATE_LIMIT_EXCEEDED
