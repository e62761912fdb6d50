"""What the dispatch machine asks its driver to do, in order; each docstring is the driver's
contract for that action. Every action carries all the driver needs, so the driver decides
nothing: a `Release` brings its registry status code and its metrics outcome. The driver
matches on `Action` exhaustively, so adding one here fails type checking until executed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from contract.errors import ErrorCode, Failure
from contract.slots import RELEASE_CANCELLED, RELEASE_SUCCESS
from dispatcher_svc.dispatch.events import Timer, Usage

__all__ = [
    "CANCELLED",
    "DISCONNECT",
    "NON_RETRYABLE",
    "SUCCESS",
    "TIMEOUT",
    "AbortReserve",
    "Action",
    "Cancel",
    "ClearTimer",
    "Commit",
    "Fail",
    "Finish",
    "InBandError",
    "Outcome",
    "Relay",
    "Release",
    "Reserve",
    "Send",
    "SetTimer",
]

# Release status codes besides failure codes (the registry's ReleaseRequest convention).
SUCCESS: Final = RELEASE_SUCCESS
CANCELLED: Final = RELEASE_CANCELLED
# The failure codes the machine itself assigns: a stream that ended early, a stall (B9).
DISCONNECT: Final = 502
TIMEOUT: Final = 504

# B11: the request itself is bad; another provider would refuse it too.
NON_RETRYABLE: Final = frozenset({400, 413, 415, 422})


class Outcome(enum.StrEnum):
    """How one released attempt ended: the `dispatcher_dispatches` label (issue 7)."""

    SUCCESS = "success"
    RETRY_PRECONTENT = "retry_precontent"
    TIMEOUT = "timeout"
    FAILURE = "failure"
    CANCELLED = "cancelled"

    @classmethod
    def of(cls, status: int, *, committed: bool, goes_on: bool) -> Outcome:
        """The outcome of a release with this status code.

        `committed`: the attempt had committed (its failure is told in-band, never retried).
        `goes_on`: the request carries on without it (a retry or a racer takes over).
        A stall is `timeout` in any phase; a pre-commit failure that is retried or failed
        over is `retry_precontent`; every other error (the last one, a non-retryable 4xx,
        any post-commit error) is `failure`.
        """
        if status == SUCCESS:
            return cls.SUCCESS
        if status == CANCELLED:
            return cls.CANCELLED
        if status == TIMEOUT:
            return cls.TIMEOUT
        if not committed and goes_on and status not in NON_RETRYABLE:
            return cls.RETRY_PRECONTENT
        return cls.FAILURE


@dataclass(frozen=True, slots=True)
class Reserve:
    """Select and take a slot, then feed back exactly one `Reserved` or `NoProvider` for
    `attempt` -- also after `AbortReserve`. `may_queue` only on the first reserve: retries
    never queue."""

    attempt: int
    exclude: frozenset[str]
    avoid_version: str | None
    may_queue: bool
    backup: bool


@dataclass(frozen=True, slots=True)
class AbortReserve:
    """The result of this attempt's Reserve is no longer wanted: cancel the call if it is
    still queued, and still feed back its one answer (if a slot came back anyway, feed
    `Reserved`: the machine releases it)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Send:
    """Seal and write the request to the reserved provider, then run a task turning that
    attempt's frames into `Accepted`/`Chunk`/`ProviderError`/`Completed` and any other end
    of its stream (session closed, failed write) into `Disconnected`; the task stops after
    its first terminal event. A frame the link rejects (bad seal) is `ProviderError(attempt,
    502, ...)`."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """Send the provider the cancel frame and stop the attempt's task. Only ever for an
    attempt still running (one that has not reported a terminal event)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Release:
    """Registry Release: give the slot back and feed the breaker with `status_code`
    (SUCCESS, CANCELLED or the failure code); count the attempt under `outcome`; report
    what the attempt measured of its provider's speed (C5). Exactly one per reserved
    attempt (B12).

    `slow`: the attempt had no first content within its own time -- its first-content timer
    fired (B6-B8), or another attempt's first content overtook it after it had run at least
    the race point (B5) -- so the registry gets a slow first-content sample, not silence."""

    attempt: int
    status_code: int
    outcome: Outcome
    slow: bool = False


@dataclass(frozen=True, slots=True)
class SetTimer:
    """At `timer.at`, feed `timer` itself back as the event."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class ClearTimer:
    """Drop the armed `timer` (one already delivered is ignored by the machine)."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class Commit:
    """The commit point: tell the gateway (Committed), then send `chunks` (held preamble +
    this chunk), in order."""

    attempt: int
    provider: str
    version: str
    chunks: tuple[bytes, ...]
    dispatches: int  # attempts sent so far, for X-Attempts
    speculative_win: bool  # the winner was a speculative backup


@dataclass(frozen=True, slots=True)
class Relay:
    """Send the committed attempt's `chunks` to the gateway, in order."""

    chunks: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Finish:
    """The stream ends with success (the committed attempt sent `Complete`)."""

    usage: Usage


@dataclass(frozen=True, slots=True)
class InBandError:
    """After commit: the stream ends with this error, in band (B3)."""

    status_code: int
    code: ErrorCode
    message: str

    @property
    def failure(self) -> Failure:
        return Failure(self.code, self.message, self.status_code)


@dataclass(frozen=True, slots=True)
class Fail:
    """Before commit: the request fails with this error status (B11)."""

    http_status: int
    code: ErrorCode
    message: str
    retry_after_s: float | None = None

    @property
    def failure(self) -> Failure:
        return Failure(self.code, self.message, self.http_status, self.retry_after_s or 0.0)


Action = (
    Reserve
    | AbortReserve
    | Send
    | Cancel
    | Release
    | SetTimer
    | ClearTimer
    | Commit
    | Relay
    | Finish
    | InBandError
    | Fail
)
