"""What the dispatch machine hears: reserve answers, an attempt's link events, timers, and
the outside (client gone, shutdown). Every event the driver can feed is in `Event`; the
machine matches on it exhaustively, so adding one here fails type checking until handled.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from contract.errors import ErrorCode

__all__ = [
    "Accepted",
    "AttemptEvent",
    "Chunk",
    "ClientGone",
    "Completed",
    "Disconnected",
    "Event",
    "NoProvider",
    "ProviderError",
    "Reserved",
    "Shutdown",
    "Timer",
    "TimerKind",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class TimerKind(enum.Enum):
    SPECULATIVE = "speculative"  # ratio x deadline after a primary's Send: race a backup
    DEADLINE = "deadline"  # ttft deadline after an attempt's Send
    PREAMBLE = "preamble"  # the one extension of a deadline that passed with preamble held
    ACCEPTED = "accepted"  # first-content budget after a cold-load Accepted
    IDLE = "idle"  # post-commit: longest gap between chunks


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer; both the payload of `SetTimer`/`ClearTimer` and, when it fires, the event.
    Timers compare by value, so a stale one (cleared or superseded) is told apart from the
    armed one by equality."""

    kind: TimerKind
    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class Reserved:
    attempt: int
    provider: str
    version: str


@dataclass(frozen=True, slots=True)
class NoProvider:
    """The registry had no slot. `full`: capable providers exist but are all busy (or the
    queue was full / timed out) -> 429 when no provider ever failed; otherwise the
    registry's own refusal (`status`, `code`: 404 model_not_found, 503 model_unavailable).
    The first Reserve is the request's admission, so its refusal is the client's answer."""

    attempt: int
    full: bool = False
    retry_after_s: float | None = None
    message: str = ""
    status: int = 503
    code: ErrorCode = ErrorCode.MODEL_UNAVAILABLE


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider says it is loading the model cold: a promise of content within the
    inference timeout (B6). `plausible`: the driver found a cold load possible (this
    provider's session has not delivered content for the model, and no cold load of it has
    outlived its budget, `speed.ColdLoads`); otherwise it is a lie and changes nothing."""

    attempt: int
    plausible: bool = True


@dataclass(frozen=True, slots=True)
class Chunk:
    """One provider chunk; `boilerplate` is `contract.chunks.is_boilerplate(payload)`."""

    attempt: int
    payload: bytes
    boilerplate: bool


@dataclass(frozen=True, slots=True)
class ProviderError:
    attempt: int
    status: int
    message: str = ""


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The attempt's stream ended without `Completed` or an error: the session closed, the
    request could not be written, or the provider is gone. A 502, never a success (B9)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Completed:
    attempt: int
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class ClientGone:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


# What one sent attempt's link can say; each attempt's task ends after its first terminal
# one (ProviderError, Disconnected, Completed).
AttemptEvent = Accepted | Chunk | ProviderError | Disconnected | Completed

Event = Reserved | NoProvider | AttemptEvent | Timer | ClientGone | Shutdown
