"""Registry refusals. Each class names its HTTP status and error code here, once; the
servicer maps ``http_status`` to a gRPC status and the gateway renders ``code``.

Every refusal carries a human ``message`` and, where a retry makes sense, ``retry_after_s``.
"""

from __future__ import annotations

from typing import ClassVar

from registry_svc.model import Shape


class RegistryError(Exception):
    """Base of every registry refusal."""

    http_status: ClassVar[int] = 503
    code: ClassVar[str] = "model_unavailable"

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class UnknownModel(RegistryError):
    """No provider serves or recently served the model (A3: 404)."""

    http_status = 404
    code = "model_not_found"


class NoCapableProvider(RegistryError):
    """A6: no online provider passes the tools (or vision) gates; fail at once, never queue."""

    def __init__(self, message: str, *, capability: Shape) -> None:
        super().__init__(message)
        self.capability = capability


class NoEligibleProvider(RegistryError):
    """A7: nothing structurally eligible (and nothing merely reconnecting)."""


class ModelTooLarge(RegistryError):
    """A7: the only providers that could serve have too small a context for the request."""

    code = "model_too_large"


class ProvidersBusy(RegistryError):
    """Capable providers are all full and this request may not queue (a retry, B11: 429)."""

    http_status = 429
    code = "rate_limit_exceeded"


class QueueFull(RegistryError):
    """A7: the model's wait queue is full."""

    http_status = 429
    code = "rate_limit_exceeded"


class QueueTimeout(RegistryError):
    """A7: waited the whole queue budget without a free slot."""

    http_status = 429
    code = "rate_limit_exceeded"
