"""The per-request dispatch state machine (docs/architecture.md, rules B1-B12).

Pure: no I/O, no clock, no randomness. `start` opens a request; `step(state, event, now)`
returns the next state and the actions a driver must execute, in order. Phases
(`DispatchState.phase`):

    SELECTING -> WAITING_FIRST_CONTENT -> COMMITTED -> DONE | FAILED   (| CANCELLED)

SELECTING and WAITING_FIRST_CONTENT are both "pre-commit": any number of attempts may be
reserving or live, each holding its own preamble. `_commit` is the one transition into
COMMITTED; the committed handler (`_step_committed`) can only relay, finish, or report an
in-band error, so a failover after commit is impossible by construction (B3). Every ending
goes through `_teardown`, and so does the commit (for the losers).

The driver executes the actions in the order given, each as its docstring in `actions`
says; feeds every event to `step` (stale ones are ignored here) with `now` from the clock
the timers use; turns a client disconnect into `ClientGone` and its own shutdown into
`Shutdown`; and stops when `state.finished`: every reservation has then been released
exactly once (B12) and no timer is armed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Final, assert_never

from contract.errors import ErrorCode
from dispatcher_svc.dispatch.actions import (
    CANCELLED,
    DISCONNECT,
    NON_RETRYABLE,
    SUCCESS,
    TIMEOUT,
    AbortReserve,
    Action,
    Cancel,
    ClearTimer,
    Commit,
    Fail,
    Finish,
    InBandError,
    Outcome,
    Relay,
    Release,
    Reserve,
    Send,
    SetTimer,
)
from dispatcher_svc.dispatch.events import (
    Accepted,
    AttemptEvent,
    Chunk,
    ClientGone,
    Completed,
    Disconnected,
    Event,
    NoProvider,
    ProviderError,
    Reserved,
    Shutdown,
    Timer,
    TimerKind,
)
from dispatcher_svc.dispatch.state import (
    AttemptState,
    DispatchSettings,
    DispatchState,
    LastError,
    Phase,
    Streaming,
)

__all__ = ["Step", "start", "step", "step_all"]

Step = tuple[DispatchState, list[Action]]

_STALLED: Final = {
    TimerKind.DEADLINE: "no content before the first-token deadline",
    TimerKind.PREAMBLE: "preamble but no content before the extended deadline",
    TimerKind.ACCEPTED: "accepted (cold load) but no content before the inference timeout",
}


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
    match event:
        case Reserved():
            return _on_reserved(state, event, now)
        case NoProvider():
            return _on_no_provider(state, event)
        case _ if state.terminal is not None:
            return state, []  # decided: only the answers still owed to reserves count
        case ClientGone():
            return _teardown(state, [], Phase.CANCELLED)
        case Shutdown():
            why = (ErrorCode.SHUTTING_DOWN, "dispatcher shutting down")
            final = InBandError(503, *why) if state.streaming is not None else Fail(503, *why)
            return _teardown(state, [], Phase.FAILED, final)
        case Timer():
            if state.streaming is not None:
                return _on_idle_timer(state, state.streaming, event)
            return _on_pre_commit_timer(state, event)
        case Accepted() | Chunk() | ProviderError() | Disconnected() | Completed():
            if state.streaming is not None:
                return _step_committed(state, state.streaming, event, now)
            return _step_pre_commit(state, event, now)
        case _:
            assert_never(event)


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


def _on_reserved(state: DispatchState, event: Reserved, now: float) -> Step:
    state, backup = state.answered(event.attempt)
    state = replace(state, tried=state.tried | {event.provider})
    if backup is None:
        # Nobody wants this slot any more (commit, failure or client gone came first).
        return state, [Release(event.attempt, CANCELLED, Outcome.CANCELLED)]
    deadline = Timer(TimerKind.DEADLINE, event.attempt, now + state.ttft_deadline_s)
    attempt = AttemptState(
        event.attempt, event.provider, event.version, backup, deadline, sent_at=now
    )
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
    state, backup = state.answered(event.attempt)
    if backup is None:
        return state, []
    state = replace(state, last_no_provider=event)
    if state.live or state.reserving:
        return state, []  # other attempts may still deliver
    return _fail(state, [])


# ---- pre-commit -----------------------------------------------------------------------


def _step_pre_commit(state: DispatchState, event: AttemptEvent, now: float) -> Step:
    attempt = state.attempt(event.attempt)
    if attempt is None:
        return state, []  # a loser, a failed attempt, or a cancelled one: stale
    match event:
        case Chunk():
            if event.boilerplate and len(attempt.held) < state.settings.max_held_preamble:
                # B1: hold the preamble; it proves liveness (B7) but wins nothing (B5).
                held = replace(attempt, held=(*attempt.held, event.payload))
                return state.put(held), []
            return _commit(state, attempt, (*attempt.held, event.payload), now)
        case Completed():
            # B4: preamble (or nothing) then a clean complete: commit, then complete as usual.
            state, actions = _commit(state, attempt, attempt.held, now)
            state, finish = step(state, event, now)
            return state, actions + finish
        case Accepted():
            if not event.plausible or attempt.timer.kind is TimerKind.ACCEPTED:
                # B6: a lie (the provider already served this model, or its one cold load
                # ran out) changes nothing; nor does a repeated promise.
                return state, []
            # B6: a cold load is a promise of content within inference_timeout. It replaces
            # the attempt's deadline but not the race: a backup still goes out at the usual
            # point, and the first content wins (B5).
            timer = Timer(TimerKind.ACCEPTED, attempt.id, now + state.settings.inference_timeout_s)
            actions = [ClearTimer(attempt.timer), SetTimer(timer)]
            return state.put(replace(attempt, timer=timer)), actions
        case ProviderError():
            status = _failure_status(event.status)
            return _attempt_failed(
                state, attempt, status, event.message or f"provider error {status}"
            )
        case Disconnected():
            return _attempt_failed(state, attempt, DISCONNECT, "provider disconnected")
        case _:
            assert_never(event)


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
        return state.put(replace(attempt, timer=extended)), [SetTimer(extended)]
    # B7/B8/B6: a stall is a 504 for the breaker (B9) and a slow sample (C5); the provider
    # is still running. After Accepted it is a broken promise.
    message = _STALLED[timer.kind]
    return _attempt_failed(state, attempt, TIMEOUT, message, cancel=True, fired=timer, slow=True)


def _attempt_failed(
    state: DispatchState,
    attempt: AttemptState,
    status: int,
    message: str,
    *,
    cancel: bool = False,
    fired: Timer | None = None,
    slow: bool = False,
) -> Step:
    """B2: drop the attempt and its held chunks, feed the breaker, then fail over."""
    actions: list[Action] = []
    speculative = state.speculative
    if speculative is not None and speculative.attempt == attempt.id:
        actions.append(ClearTimer(speculative))  # its primary is gone: no race to start
        speculative = None
    state = replace(
        state,
        live=tuple(a for a in state.live if a.id != attempt.id),
        speculative=speculative,
        last_error=LastError(status, message),
        avoid_version=attempt.version or None,  # B10
    )
    racing = bool(state.live or state.reserving)  # a racer still running is the failover
    # B11: a bad request is not retried; nor is anything once the attempts are used up.
    goes_on = status not in NON_RETRYABLE and (
        racing or state.primaries < state.settings.max_dispatch_attempts
    )
    outcome = Outcome.of(status, committed=False, goes_on=goes_on)
    release = Release(attempt.id, status, outcome, slow=slow)
    actions += _stop(attempt.timer, release, cancel=cancel, fired=fired)
    if not goes_on:
        return _fail(state, actions)
    if racing:
        return state, actions
    state, reserve = _reserve(state, backup=False)
    return state, actions + reserve


def _commit(
    state: DispatchState, winner: AttemptState, chunks: tuple[bytes, ...], now: float
) -> Step:
    """THE commit point (B1): the winner's held chunks go out in order, every other attempt
    loses (B5), and the state moves to COMMITTED, whose handler cannot retry (B3). A loser
    that had run at least the race point without content was slow (C5)."""
    losers = replace(state, live=tuple(a for a in state.live if a.id != winner.id))
    state, actions = _teardown(losers, [ClearTimer(winner.timer)], None, overtaken_at=now)
    actions.append(
        Commit(winner.id, winner.provider, winner.version, chunks, state.dispatches, winner.backup)
    )
    idle = Timer(TimerKind.IDLE, winner.id, now + state.settings.inference_timeout_s)
    actions.append(SetTimer(idle))
    return replace(state, streaming=Streaming(winner.id, idle, now)), actions


# ---- committed ------------------------------------------------------------------------


def _step_committed(
    state: DispatchState, streaming: Streaming, event: AttemptEvent, now: float
) -> Step:
    """After commit: relay, finish, or report in-band (B3). No path here can retry."""
    if event.attempt != streaming.attempt:
        return state, []  # a loser's late frame
    match event:
        case Chunk():
            state = replace(state, streaming=replace(streaming, last_chunk_at=now))
            return state, [Relay((event.payload,))]
        case Completed():
            return _end_stream(state, streaming, SUCCESS, Finish(event.usage))
        case ProviderError():
            status = _failure_status(event.status)
            error = _in_band(status, event.message or f"provider error {status}")
            return _end_stream(state, streaming, status, error)
        case Disconnected():
            # B9: no Complete is no success, whatever was streamed.
            error = _in_band(DISCONNECT, "provider disconnected")
            return _end_stream(state, streaming, DISCONNECT, error)
        case Accepted():
            return state, []  # a late Accepted means nothing now
        case _:
            assert_never(event)


def _on_idle_timer(state: DispatchState, streaming: Streaming, timer: Timer) -> Step:
    if timer != streaming.timer:
        return state, []  # stale: cleared at the commit, or an idle timer since re-armed
    due = streaming.last_chunk_at + state.settings.inference_timeout_s
    if due > timer.at:
        rearmed = Timer(TimerKind.IDLE, streaming.attempt, due)
        return replace(state, streaming=replace(streaming, timer=rearmed)), [SetTimer(rearmed)]
    # B9: a post-commit stall strikes 504 and is told in-band.
    error = _in_band(TIMEOUT, "no chunk within the inference timeout")
    return _end_stream(state, streaming, TIMEOUT, error, cancel=True, fired=timer)


def _end_stream(
    state: DispatchState,
    streaming: Streaming,
    status: int,
    final: Finish | InBandError,
    *,
    cancel: bool = False,
    fired: Timer | None = None,
) -> Step:
    """The committed attempt ended (or stalled): release it with `status`, tell `final`."""
    outcome = Outcome.of(status, committed=True, goes_on=False)
    release = Release(streaming.attempt, status, outcome)
    actions = _stop(streaming.timer, release, cancel=cancel, fired=fired)
    return _teardown(replace(state, streaming=None), actions, Phase.DONE, final)


# ---- endings --------------------------------------------------------------------------


def _fail(state: DispatchState, actions: list[Action]) -> Step:
    """Fail the request before commit (B11) with the last real error; stop what is left."""
    error, verdict = state.last_error, state.last_no_provider
    if error is not None:
        fail = Fail(error.status, _error_code(error.status), error.message)
    elif verdict is not None and verdict.full:
        message = verdict.message or "all capable providers are busy"
        fail = Fail(429, ErrorCode.RATE_LIMIT_EXCEEDED, message, verdict.retry_after_s)
    elif verdict is not None:
        message = verdict.message or "no provider available"
        fail = Fail(verdict.status, verdict.code, message, verdict.retry_after_s)
    else:
        fail = Fail(503, ErrorCode.MODEL_UNAVAILABLE, "no provider available")
    return _teardown(state, actions, Phase.FAILED, fail)


def _teardown(
    state: DispatchState,
    actions: Sequence[Action],
    terminal: Phase | None,
    final: Action | None = None,
    *,
    overtaken_at: float | None = None,
) -> Step:
    """After `actions`, stop everything still running: cancel every live attempt and the
    committed one, disarm their timers and the race timer, release their slots as
    cancelled, and abort every outstanding reserve (whose answer is still owed: B12). Then
    `final`, the client's last word, if any. Every ending goes through here (`terminal`),
    and so does the commit, for the losers (`terminal` None, `overtaken_at` the commit's
    time: a loser that had run the race point by then is released `slow`, C5)."""
    out = list(actions)
    late = float("-inf") if overtaken_at is None else overtaken_at - state.race_point_s
    running = [(a.id, a.timer, a.sent_at <= late) for a in state.live]
    if state.streaming is not None:
        running.append((state.streaming.attempt, state.streaming.timer, False))
    for attempt, timer, slow in running:
        release = Release(attempt, CANCELLED, Outcome.CANCELLED, slow=slow)
        out += _stop(timer, release, cancel=True)
    if state.speculative is not None:
        out.append(ClearTimer(state.speculative))
    aborted = [attempt for attempt, _ in state.reserving]
    out += [AbortReserve(attempt) for attempt in aborted]
    if final is not None:
        out.append(final)
    state = replace(
        state,
        live=(),
        reserving=(),
        unwanted=state.unwanted.union(aborted),
        speculative=None,
        streaming=None,
        terminal=terminal,
    )
    return state, out


# ---- helpers --------------------------------------------------------------------------


def _stop(
    timer: Timer, release: Release, *, cancel: bool, fired: Timer | None = None
) -> list[Action]:
    """The actions ending one attempt: stop it (unless it ended itself), disarm its timer
    (unless that is the one that fired), release its slot."""
    actions: list[Action] = [Cancel(release.attempt)] if cancel else []
    if timer != fired:
        actions.append(ClearTimer(timer))
    actions.append(release)
    return actions


def _failure_status(status: int) -> int:
    # An error frame without a usable HTTP error code is still a provider failure.
    return status if 400 <= status <= 599 else DISCONNECT


def _in_band(status: int, message: str) -> InBandError:
    return InBandError(status, _error_code(status), message)


def _error_code(status: int) -> ErrorCode:
    if status == TIMEOUT:
        return ErrorCode.TIMEOUT
    if status in NON_RETRYABLE:
        return ErrorCode.INVALID_REQUEST
    return ErrorCode.PROVIDER_ERROR
