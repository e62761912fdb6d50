"""The per-request dispatch state machine (DESIGN "The dispatch state machine", BEHAVIOR B1-B12).

Pure: no I/O, no clock, no randomness. `start` opens a request; `step(state, event, now)`
returns the next state and the actions a driver must execute, in order. Phases:

    SELECTING -> WAITING_FIRST_CONTENT -> COMMITTED -> DONE | FAILED   (| CANCELLED)

SELECTING and WAITING_FIRST_CONTENT are both "pre-commit": any number of attempts may be
reserving or live, each holding its own preamble. `_commit` is the one transition into
COMMITTED; the committed handler (`_step_committed`) can only relay, finish, or report an
in-band error, so a failover after commit is impossible by construction (B3).

Driver contract (keeps the driver thin):
  * Execute actions in the order given:
    - `Reserve`: call the registry, then feed back exactly one `Reserved` or `NoProvider`
      for that attempt -- also after `AbortReserve` (cancel the call if it is still queued;
      if a slot came back anyway feed `Reserved`, and the machine releases it).
    - `Send`: seal and write the request, then run a task turning that attempt's frames
      into `Accepted`/`Chunk`/`ProviderError`/`Completed` and its end into
      `Disconnected`/`Ended`; the task stops after its first terminal event. A failed write
      is `Disconnected`; a frame the driver rejects (bad seal) is `ProviderError(attempt,
      502, ...)` once the driver has stopped that attempt itself.
    - `Cancel`: send the cancel frame and stop that task (only for attempts still running).
    - `Release`: registry Release with `status_code` (200 success, 0 cancelled, else the
      failure code, which feeds the breaker).
    - `SetTimer`: at `timer.at` feed `timer` itself back as the event. `ClearTimer`: drop it.
    - `Commit` (Committed metadata, then its chunks), `Relay`, `Finish`, `InBandError`,
      `Fail`: the gateway stream.
  * Feed every event to `step` (stale ones are ignored here) with `now` from the clock the
    timers use. Stop when `state.finished`: every reservation has then been released
    exactly once (B12) and no timer is armed.
  * Client disconnect -> `ClientGone`; dispatcher shutdown -> `Shutdown`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from contract.errors import ErrorCode, Failure

__all__ = [
    "CANCELLED",
    "NON_RETRYABLE",
    "SUCCESS",
    "AbortReserve",
    "Accepted",
    "Action",
    "AttemptState",
    "Cancel",
    "Chunk",
    "ClearTimer",
    "ClientGone",
    "Commit",
    "Completed",
    "Disconnected",
    "DispatchSettings",
    "DispatchState",
    "Ended",
    "Event",
    "Fail",
    "Finish",
    "InBandError",
    "NoProvider",
    "Phase",
    "ProviderError",
    "Relay",
    "Release",
    "Reserve",
    "Reserved",
    "Send",
    "SetTimer",
    "Shutdown",
    "Timer",
    "TimerKind",
    "Usage",
    "start",
    "step",
    "step_all",
]

# Release status codes besides failure codes (the registry's ReleaseRequest convention).
SUCCESS: Final = 200
CANCELLED: Final = 0

# B11: the request itself is bad; another provider would refuse it too.
NON_RETRYABLE: Final = frozenset({400, 413, 415, 422})

_DISCONNECT: Final = 502
_TIMEOUT: Final = 504


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """Dispatch budgets; defaults are BEHAVIOR.md's constants. Durations in seconds.

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


_STALLED: Final = {
    TimerKind.DEADLINE: "no content before the first-token deadline",
    TimerKind.PREAMBLE: "preamble but no content before the extended deadline",
    TimerKind.ACCEPTED: "accepted (cold load) but no content before the inference timeout",
}


# ---- events (in) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timer:
    """A timer; both the payload of `SetTimer`/`ClearTimer` and, when it fires, the event."""

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
    attempt: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """One provider chunk; `boilerplate` is `chunks.is_boilerplate(payload)`."""

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
    attempt: int


@dataclass(frozen=True, slots=True)
class Completed:
    attempt: int
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class Ended:
    """The attempt's stream closed without `Completed` or an error: never a success (B9)."""

    attempt: int


@dataclass(frozen=True, slots=True)
class ClientGone:
    pass


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


Event = (
    Reserved
    | NoProvider
    | Accepted
    | Chunk
    | ProviderError
    | Disconnected
    | Completed
    | Ended
    | Timer
    | ClientGone
    | Shutdown
)

# ---- actions (out) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserve:
    """Select and take a slot. `may_queue` only on the first reserve: retries never queue."""

    attempt: int
    exclude: frozenset[str]
    avoid_version: str | None
    may_queue: bool
    backup: bool


@dataclass(frozen=True, slots=True)
class AbortReserve:
    """The result of this attempt's Reserve is no longer wanted; still feed it back."""

    attempt: int


@dataclass(frozen=True, slots=True)
class Send:
    attempt: int


@dataclass(frozen=True, slots=True)
class Cancel:
    attempt: int


@dataclass(frozen=True, slots=True)
class Release:
    """Give the slot back and feed the breaker: SUCCESS, CANCELLED or the failure code."""

    attempt: int
    status_code: int


@dataclass(frozen=True, slots=True)
class SetTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class ClearTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class Commit:
    """The commit point: tell the gateway, then send `chunks` (held preamble + this chunk)."""

    attempt: int
    provider: str
    version: str
    chunks: tuple[bytes, ...]
    dispatches: int  # attempts sent so far, for X-Attempts
    speculative_win: bool  # the winner was a speculative backup


@dataclass(frozen=True, slots=True)
class Relay:
    chunks: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Finish:
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

# ---- state ----------------------------------------------------------------------------


class Phase(enum.Enum):
    SELECTING = "selecting"
    WAITING_FIRST_CONTENT = "waiting_first_content"
    COMMITTED = "committed"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class AttemptState:
    """A sent attempt that has not committed and not ended. `timer` is its armed
    first-content watch (DEADLINE, PREAMBLE or ACCEPTED); accepted = ACCEPTED watch."""

    id: int
    provider: str
    version: str
    backup: bool
    timer: Timer
    held: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class _Streaming:
    """The committed attempt. The idle timer is re-armed lazily from `last_chunk_at` when it
    fires, so relaying a chunk costs no timer actions."""

    attempt: int
    timer: Timer
    last_chunk_at: float


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    message: str


@dataclass(frozen=True, slots=True)
class DispatchState:
    settings: DispatchSettings
    ttft_deadline_s: float
    live: tuple[AttemptState, ...] = ()
    # Attempt id -> is a backup, for every Reserve not yet answered.
    reserving: tuple[tuple[int, bool], ...] = ()
    next_attempt: int = 1
    primaries: int = 0  # primary reserves issued; backups do not count (B11)
    dispatches: int = 0
    tried: frozenset[str] = frozenset()
    last_failure: _Failure | None = None
    avoid_version: str | None = None
    last_no_provider: NoProvider | None = None
    speculative: Timer | None = None
    streaming: _Streaming | None = None
    terminal: Phase | None = None  # DONE, FAILED or CANCELLED once decided

    @property
    def phase(self) -> Phase:
        if self.terminal is not None:
            return self.terminal
        if self.streaming is not None:
            return Phase.COMMITTED
        return Phase.WAITING_FIRST_CONTENT if self.live else Phase.SELECTING

    @property
    def finished(self) -> bool:
        """The driver may stop: outcome decided, every slot released, no timer armed."""
        return self.terminal is not None and not self.reserving

    def attempt(self, attempt_id: int) -> AttemptState | None:
        for a in self.live:
            if a.id == attempt_id:
                return a
        return None


Step = tuple[DispatchState, list[Action]]


def start(settings: DispatchSettings, prompt_tokens: int) -> Step:
    """Open a request: the deadline is fixed here, and the first Reserve may queue."""
    state = DispatchState(
        settings=settings, ttft_deadline_s=settings.ttft_deadline_s(prompt_tokens)
    )
    return _reserve(state, backup=False, may_queue=True)


def step(state: DispatchState, event: Event, now: float) -> Step:
    """Apply one event at time `now`. Never mutates `state`; actions are in execution order.

    Raises ValueError only for driver bugs: a `Reserved`/`NoProvider` for an attempt with no
    outstanding Reserve (that would break exactly-once release).
    """
    if isinstance(event, Reserved):
        return _on_reserved(state, event, now)
    if isinstance(event, NoProvider):
        return _on_no_provider(state, event)
    if state.terminal is not None:
        return state, []
    if isinstance(event, ClientGone | Shutdown):
        return _abandon(state, event)
    if state.streaming is not None:
        return _step_committed(state, state.streaming, event, now)
    return _step_pre_commit(state, event, now)


def step_all(state: DispatchState, events: Iterable[Event], now: float) -> Step:
    """Apply several events that were ready at once; adjacent Relays are coalesced.

    Equal to folding `step` over `events`, with one fast path for the hot case: a run of
    post-commit chunks from the streaming attempt is relayed as one batch with a single
    state update (each would otherwise copy the state just to touch `last_chunk_at`)."""
    out: list[Action] = []
    relay: list[bytes] = []
    touched = True
    for event in events:
        streaming = state.streaming
        if (
            streaming is not None
            and state.terminal is None
            and isinstance(event, Chunk)
            and event.attempt == streaming.attempt
        ):
            relay.append(event.payload)
            touched = False
            continue
        if not touched:
            state, touched = _touch(state, now), True
        state, actions = step(state, event, now)
        for action in actions:
            if isinstance(action, Relay):
                relay.extend(action.chunks)
            else:
                relay = _flush(out, relay)
                out.append(action)
    if not touched:
        state = _touch(state, now)
    _flush(out, relay)
    return state, out


def _touch(state: DispatchState, now: float) -> DispatchState:
    """What a relayed post-commit chunk does to the state (B9's idle clock restarts)."""
    assert state.streaming is not None
    return replace(state, streaming=replace(state.streaming, last_chunk_at=now))


def _flush(out: list[Action], relay: list[bytes]) -> list[bytes]:
    """Append pending relayed chunks as one Relay; return a fresh buffer."""
    if relay:
        out.append(Relay(tuple(relay)))
    return []


# ---- selection ------------------------------------------------------------------------


def _reserve(state: DispatchState, *, backup: bool, may_queue: bool = False) -> Step:
    attempt = state.next_attempt
    action = Reserve(attempt, state.tried, state.avoid_version, may_queue, backup)
    return (
        replace(
            state,
            reserving=(*state.reserving, (attempt, backup)),
            next_attempt=attempt + 1,
            primaries=state.primaries + (0 if backup else 1),
        ),
        [action],
    )


def _take_reserving(state: DispatchState, attempt: int) -> tuple[DispatchState, bool]:
    for entry in state.reserving:
        if entry[0] == attempt:
            rest = tuple(e for e in state.reserving if e[0] != attempt)
            return replace(state, reserving=rest), entry[1]
    raise ValueError(f"attempt {attempt} has no outstanding Reserve")


def _on_reserved(state: DispatchState, event: Reserved, now: float) -> Step:
    state, backup = _take_reserving(state, event.attempt)
    state = replace(state, tried=state.tried | {event.provider})
    if state.terminal is not None or state.streaming is not None:
        # Nobody wants this slot any more (commit, failure or client gone came first).
        return state, [Release(event.attempt, CANCELLED)]
    deadline = Timer(TimerKind.DEADLINE, event.attempt, now + state.ttft_deadline_s)
    attempt = AttemptState(event.attempt, event.provider, event.version, backup, deadline)
    actions: list[Action] = [Send(event.attempt), SetTimer(deadline)]
    state = replace(state, live=(*state.live, attempt), dispatches=state.dispatches + 1)
    # One backup per primary, raced at ratio x deadline (B5); a backup gets none of its own.
    # (A primary is only reserved when nothing else is live, so no timer is armed here.)
    if not backup and state.speculative is None and state.settings.speculative_ratio < 1:
        at = now + state.settings.speculative_ratio * state.ttft_deadline_s
        speculative = Timer(TimerKind.SPECULATIVE, event.attempt, at)
        actions.append(SetTimer(speculative))
        state = replace(state, speculative=speculative)
    return state, actions


def _on_no_provider(state: DispatchState, event: NoProvider) -> Step:
    state, _ = _take_reserving(state, event.attempt)
    state = replace(state, last_no_provider=event)
    if state.terminal is not None or state.streaming is not None or state.live or state.reserving:
        return state, []  # decided already, or other attempts may still deliver
    return _fail(state, [])


# ---- pre-commit -----------------------------------------------------------------------


def _step_pre_commit(state: DispatchState, event: Event, now: float) -> Step:
    if isinstance(event, Timer):
        return _on_pre_commit_timer(state, event)
    if not isinstance(event, Accepted | Chunk | ProviderError | Disconnected | Completed | Ended):
        return state, []
    attempt = state.attempt(event.attempt)
    if attempt is None:
        return state, []  # a loser, a failed attempt, or a cancelled one: stale
    if isinstance(event, Chunk):
        if event.boilerplate and len(attempt.held) < state.settings.max_held_preamble:
            # B1: hold the preamble; it proves liveness (B7) but wins nothing (B5).
            held = replace(attempt, held=(*attempt.held, event.payload))
            return _put(state, held), []
        return _commit(state, attempt, (*attempt.held, event.payload), now)
    if isinstance(event, Completed):
        # B4: preamble (or nothing) then a clean complete: commit, then complete as usual.
        state, actions = _commit(state, attempt, attempt.held, now)
        assert state.streaming is not None
        state, finish = _step_committed(state, state.streaming, event, now)
        return state, actions + finish
    if isinstance(event, Accepted):
        if attempt.timer.kind is TimerKind.ACCEPTED:
            return state, []
        # B6: a cold load gets inference_timeout for first content, and is not raced.
        timer = Timer(TimerKind.ACCEPTED, attempt.id, now + state.settings.inference_timeout_s)
        actions = [ClearTimer(attempt.timer), SetTimer(timer)]
        if state.speculative is not None and state.speculative.attempt == attempt.id:
            actions.append(ClearTimer(state.speculative))
            state = replace(state, speculative=None)
        return _put(state, replace(attempt, timer=timer)), actions
    if isinstance(event, ProviderError):
        status = _failure_status(event.status)
        return _attempt_failed(state, attempt, status, event.message or f"provider error {status}")
    if isinstance(event, Disconnected):
        return _attempt_failed(state, attempt, _DISCONNECT, "provider disconnected")
    return _attempt_failed(state, attempt, _DISCONNECT, "provider stream ended without completion")


def _on_pre_commit_timer(state: DispatchState, timer: Timer) -> Step:
    if timer.kind is TimerKind.SPECULATIVE:
        if timer != state.speculative:
            return state, []
        state = replace(state, speculative=None)
        if len(state.live) != 1 or state.reserving:
            return state, []  # defensive: a race is already on
        return _reserve(state, backup=True)
    attempt = state.attempt(timer.attempt)
    if attempt is None or attempt.timer != timer:
        return state, []  # stale: cleared or superseded before it was delivered
    if timer.kind is TimerKind.DEADLINE and attempt.held:
        # B7: preamble is liveness; extend once, measured from the deadline itself.
        at = timer.at + state.settings.preamble_content_timeout_s
        extended = Timer(TimerKind.PREAMBLE, attempt.id, at)
        return _put(state, replace(attempt, timer=extended)), [SetTimer(extended)]
    # B7/B8/B6: a stall is a 504 for the breaker (B9); the provider is still running.
    message = _STALLED[timer.kind]
    return _attempt_failed(state, attempt, _TIMEOUT, message, cancel=True, fired=timer)


def _attempt_failed(
    state: DispatchState,
    attempt: AttemptState,
    status: int,
    message: str,
    *,
    cancel: bool = False,
    fired: Timer | None = None,
) -> Step:
    """B2: drop the attempt and its held chunks, feed the breaker, then fail over."""
    actions = _drop(attempt, status, cancel=cancel, fired=fired)
    speculative = state.speculative
    if speculative is not None and speculative.attempt == attempt.id:
        actions.insert(0, ClearTimer(speculative))  # its primary is gone: no race to start
        speculative = None
    state = replace(
        state,
        live=tuple(a for a in state.live if a.id != attempt.id),
        speculative=speculative,
        last_failure=_Failure(status, message),
        avoid_version=attempt.version or None,  # B10
    )
    if status in NON_RETRYABLE:
        return _fail(state, actions)  # B11: the request is the problem, not the provider
    if state.live or state.reserving:
        return state, actions  # a racer is still running: it is the failover
    if state.primaries < state.settings.max_dispatch_attempts:
        state, reserve = _reserve(state, backup=False)
        return state, actions + reserve
    return _fail(state, actions)


def _commit(
    state: DispatchState, winner: AttemptState, chunks: tuple[bytes, ...], now: float
) -> Step:
    """THE commit point (B1): the winner's held chunks go out in order, every other attempt
    loses (B5), and the state moves to COMMITTED, whose handler cannot retry (B3)."""
    actions: list[Action] = [ClearTimer(winner.timer)]
    if state.speculative is not None:
        actions.append(ClearTimer(state.speculative))
    for other in state.live:
        if other.id != winner.id:
            actions += _drop(other, CANCELLED, cancel=True)
    actions += [AbortReserve(attempt) for attempt, _ in state.reserving]
    actions.append(
        Commit(
            winner.id,
            winner.provider,
            winner.version,
            chunks,
            state.dispatches,
            winner.backup,
        )
    )
    idle = Timer(TimerKind.IDLE, winner.id, now + state.settings.inference_timeout_s)
    actions.append(SetTimer(idle))
    streaming = _Streaming(winner.id, idle, now)
    return replace(state, live=(), speculative=None, streaming=streaming), actions


# ---- committed ------------------------------------------------------------------------


def _step_committed(state: DispatchState, streaming: _Streaming, event: Event, now: float) -> Step:
    """After commit: relay, finish, or report in-band (B3). No path here can retry."""
    if isinstance(event, Timer):
        if event != streaming.timer:
            return state, []
        due = streaming.last_chunk_at + state.settings.inference_timeout_s
        if due > event.at:
            timer = Timer(TimerKind.IDLE, streaming.attempt, due)
            return replace(state, streaming=replace(streaming, timer=timer)), [SetTimer(timer)]
        # B9: a post-commit stall strikes 504 and is told in-band.
        message = "no chunk within the inference timeout"
        return _end_stream(state, streaming, _TIMEOUT, message, cancel=True, fired=event)
    if not isinstance(event, Accepted | Chunk | ProviderError | Disconnected | Completed | Ended):
        return state, []
    if event.attempt != streaming.attempt:
        return state, []
    if isinstance(event, Chunk):
        state = replace(state, streaming=replace(streaming, last_chunk_at=now))
        return state, [Relay((event.payload,))]
    if isinstance(event, Completed):
        actions: list[Action] = [
            ClearTimer(streaming.timer),
            Release(streaming.attempt, SUCCESS),
            Finish(event.usage),
        ]
        return replace(state, streaming=None, terminal=Phase.DONE), actions
    if isinstance(event, ProviderError):
        status = _failure_status(event.status)
        return _end_stream(state, streaming, status, event.message or f"provider error {status}")
    if isinstance(event, Disconnected):
        return _end_stream(state, streaming, _DISCONNECT, "provider disconnected")
    if isinstance(event, Ended):
        # B9: no Complete is no success, whatever was streamed.
        return _end_stream(
            state, streaming, _DISCONNECT, "provider stream ended without completion"
        )
    return state, []  # a late Accepted means nothing now


def _end_stream(
    state: DispatchState,
    streaming: _Streaming,
    status: int,
    message: str,
    *,
    cancel: bool = False,
    fired: Timer | None = None,
) -> Step:
    actions: list[Action] = [Cancel(streaming.attempt)] if cancel else []
    if fired != streaming.timer:
        actions.append(ClearTimer(streaming.timer))
    actions += [
        Release(streaming.attempt, status),
        InBandError(status, _error_code(status), message),
    ]
    return replace(state, streaming=None, terminal=Phase.DONE), actions


# ---- endings --------------------------------------------------------------------------


def _abandon(state: DispatchState, event: ClientGone | Shutdown) -> Step:
    """Client gone or dispatcher stopping: cancel and release everything (B12)."""
    actions: list[Action] = []
    for attempt in state.live:
        actions += _drop(attempt, CANCELLED, cancel=True)
    if state.speculative is not None:
        actions.append(ClearTimer(state.speculative))
    actions += [AbortReserve(attempt) for attempt, _ in state.reserving]
    streaming = state.streaming
    if streaming is not None:
        actions += [
            Cancel(streaming.attempt),
            ClearTimer(streaming.timer),
            Release(streaming.attempt, CANCELLED),
        ]
    terminal = Phase.CANCELLED
    if isinstance(event, Shutdown):
        message = "dispatcher shutting down"
        if streaming is not None:
            actions.append(InBandError(503, ErrorCode.SHUTTING_DOWN, message))
        else:
            actions.append(Fail(503, ErrorCode.SHUTTING_DOWN, message))
        terminal = Phase.FAILED
    state = replace(state, live=(), speculative=None, streaming=None, terminal=terminal)
    return state, actions


def _fail(state: DispatchState, actions: list[Action]) -> Step:
    """Fail the request before commit (B11): cancel what is left, report the last real error."""
    actions = list(actions)
    for attempt in state.live:
        actions += _drop(attempt, CANCELLED, cancel=True)
    if state.speculative is not None:
        actions.append(ClearTimer(state.speculative))
    actions += [AbortReserve(attempt) for attempt, _ in state.reserving]
    failure = state.last_failure
    verdict = state.last_no_provider
    if failure is not None:
        fail = Fail(failure.status, _error_code(failure.status), failure.message)
    elif verdict is not None and verdict.full:
        message = verdict.message or "all capable providers are busy"
        fail = Fail(429, ErrorCode.RATE_LIMIT_EXCEEDED, message, verdict.retry_after_s)
    else:
        retry_after = verdict.retry_after_s if verdict is not None else None
        message = (verdict.message if verdict is not None else "") or "no provider available"
        status, code = (
            (verdict.status, verdict.code)
            if verdict is not None
            else (503, ErrorCode.MODEL_UNAVAILABLE)
        )
        fail = Fail(status, code, message, retry_after)
    actions.append(fail)
    return replace(state, live=(), speculative=None, terminal=Phase.FAILED), actions


# ---- helpers --------------------------------------------------------------------------


def _drop(
    attempt: AttemptState,
    status: int,
    *,
    cancel: bool,
    fired: Timer | None = None,
) -> list[Action]:
    """The actions ending one live attempt: stop it, disarm its timers, release its slot."""
    actions: list[Action] = [Cancel(attempt.id)] if cancel else []
    if attempt.timer != fired:
        actions.append(ClearTimer(attempt.timer))
    actions.append(Release(attempt.id, status))
    return actions


def _put(state: DispatchState, attempt: AttemptState) -> DispatchState:
    return replace(state, live=tuple(attempt if a.id == attempt.id else a for a in state.live))


def _failure_status(status: int) -> int:
    # An error frame without a usable HTTP error code is still a provider failure.
    return status if 400 <= status <= 599 else _DISCONNECT


def _error_code(status: int) -> ErrorCode:
    if status == _TIMEOUT:
        return ErrorCode.TIMEOUT
    if status in NON_RETRYABLE:
        return ErrorCode.INVALID_REQUEST
    return ErrorCode.PROVIDER_ERROR
