"""What the dispatch machine remembers between events: its settings, each live attempt,
the committed one, and what it owes the registry. Immutable; only `machine` builds new ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from dispatcher_svc.dispatch.events import NoProvider, Timer

__all__ = [
    "AttemptState",
    "DispatchSettings",
    "DispatchState",
    "LastError",
    "Phase",
    "Streaming",
]


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """Dispatch budgets; defaults are the constants of docs/behavior.md. Durations in seconds.

    `speculative_ratio` >= 1 disables the speculative backup (it would come at or after the
    deadline); 0 races a backup at once.
    """

    max_dispatch_attempts: int = 3
    ttft_base_s: float = 5.0
    ttft_per_token_s: float = 0.001
    speculative_ratio: float = 0.5
    preamble_content_timeout_s: float = 90.0
    inference_timeout_s: float = 600.0
    max_held_preamble: int = 8

    def __post_init__(self) -> None:
        if self.max_dispatch_attempts < 1:
            raise ValueError("max_dispatch_attempts must be at least 1")
        if self.max_held_preamble < 0:
            raise ValueError("max_held_preamble must not be negative")
        for name in (
            "ttft_base_s",
            "ttft_per_token_s",
            "speculative_ratio",
            "preamble_content_timeout_s",
            "inference_timeout_s",
        ):
            if not getattr(self, name) >= 0:  # also rejects NaN
                raise ValueError(f"{name} must be a non-negative number")

    def ttft_deadline_s(self, prompt_tokens: int) -> float:
        """First-content deadline of every attempt of a request with this prompt size."""
        return self.ttft_base_s + self.ttft_per_token_s * max(prompt_tokens, 0)


class Phase(enum.Enum):
    """The states of a request (docs/architecture.md). SELECTING and WAITING_FIRST_CONTENT are both
    pre-commit; DONE, FAILED and CANCELLED are terminal."""

    SELECTING = "selecting"
    WAITING_FIRST_CONTENT = "waiting_first_content"
    COMMITTED = "committed"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class AttemptState:
    """A sent attempt that has not committed and not ended. `timer` is its armed
    first-content watch (DEADLINE, PREAMBLE or ACCEPTED); accepted = ACCEPTED watch.
    `sent_at`: when it was sent (how long it has had, when it is overtaken: B5, C5)."""

    id: int
    provider: str
    version: str
    backup: bool
    timer: Timer
    held: tuple[bytes, ...] = ()
    sent_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Streaming:
    """The committed attempt. The idle timer is re-armed lazily from `last_chunk_at` when it
    fires, so relaying a chunk costs no timer actions."""

    attempt: int
    timer: Timer
    last_chunk_at: float


@dataclass(frozen=True, slots=True)
class LastError:
    """The last real error of a pre-commit attempt: what the request fails with (B11)."""

    status: int
    message: str


@dataclass(frozen=True, slots=True)
class DispatchState:
    settings: DispatchSettings
    ttft_deadline_s: float
    live: tuple[AttemptState, ...] = ()
    # Attempt id -> is a backup, for every Reserve not yet answered and still wanted.
    reserving: tuple[tuple[int, bool], ...] = ()
    # Reserves whose answer is still owed but no longer wanted (AbortReserve was sent): a
    # slot that comes back anyway is released at once (B12).
    unwanted: frozenset[int] = frozenset()
    next_attempt: int = 1
    primaries: int = 0  # primary reserves issued; backups do not count (B11)
    dispatches: int = 0
    tried: frozenset[str] = frozenset()
    last_error: LastError | None = None
    avoid_version: str | None = None
    last_no_provider: NoProvider | None = None
    speculative: Timer | None = None
    streaming: Streaming | None = None
    terminal: Phase | None = None  # DONE, FAILED or CANCELLED once decided

    @property
    def phase(self) -> Phase:
        """The named state, derived from the fields so it cannot disagree with them.
        The machine branches on the fields (they carry the data each phase needs); tests
        and logs read the phase."""
        if self.terminal is not None:
            return self.terminal
        if self.streaming is not None:
            return Phase.COMMITTED
        return Phase.WAITING_FIRST_CONTENT if self.live else Phase.SELECTING

    @property
    def race_point_s(self) -> float:
        """How long a primary waits for first content before a backup races it (B5): an
        attempt overtaken after running this long without content was slow (C5)."""
        return min(self.settings.speculative_ratio, 1.0) * self.ttft_deadline_s

    @property
    def finished(self) -> bool:
        """The driver may stop: outcome decided, every slot released, no timer armed."""
        return self.terminal is not None and not self.reserving and not self.unwanted

    def attempt(self, attempt_id: int) -> AttemptState | None:
        for a in self.live:
            if a.id == attempt_id:
                return a
        return None

    def put(self, attempt: AttemptState) -> DispatchState:
        """This state with `attempt` in place of the live attempt with its id."""
        return replace(self, live=tuple(attempt if a.id == attempt.id else a for a in self.live))

    def answered(self, attempt_id: int) -> tuple[DispatchState, bool | None]:
        """This state with `attempt_id`'s Reserve off the books, and whether it was a backup
        (None: its answer was no longer wanted). ValueError if none is outstanding."""
        if attempt_id in self.unwanted:
            return replace(self, unwanted=self.unwanted - {attempt_id}), None
        for entry in self.reserving:
            if entry[0] == attempt_id:
                rest = tuple(e for e in self.reserving if e[0] != attempt_id)
                return replace(self, reserving=rest), entry[1]
        raise ValueError(f"attempt {attempt_id} has no outstanding Reserve")
