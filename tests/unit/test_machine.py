"""The dispatch state machine (B1-B12), driven by short event lists on a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st

from contract.errors import ErrorCode
from dispatcher_svc.dispatch.actions import (
    CANCELLED,
    SUCCESS,
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
    Usage,
)
from dispatcher_svc.dispatch.machine import start, step, step_all
from dispatcher_svc.dispatch.state import DispatchSettings, DispatchState, Phase

S = DispatchSettings()  # prompt_tokens=0: deadline 5 s, backup at 2.5 s
NO_RACE = replace(S, speculative_ratio=1.0)
USAGE = Usage(10, 2, 12)

DEADLINE, SPEC, PREAMBLE, ACCEPTED, IDLE = (
    TimerKind.DEADLINE,
    TimerKind.SPECULATIVE,
    TimerKind.PREAMBLE,
    TimerKind.ACCEPTED,
    TimerKind.IDLE,
)
CLIENT_ACTIONS = (Commit, Relay, Finish, InBandError, Fail)


def T(kind: TimerKind, attempt: int, at: float) -> Timer:
    return Timer(kind, attempt, at)


def role(attempt: int) -> Chunk:
    return Chunk(attempt, b"role", True)


def text(attempt: int, payload: bytes = b"text") -> Chunk:
    return Chunk(attempt, payload, False)


class Run:
    """A fake driver: feeds events on a fake clock and checks every action against the
    driver contract as it goes. `close()` is the B12 helper every scenario ends with."""

    def __init__(self, settings: DispatchSettings = S, prompt_tokens: int = 0) -> None:
        self.settings = settings
        self.now = 0.0
        self.log: list[Action] = []
        self.armed: set[Timer] = set()
        self.reserving: dict[int, Reserve] = {}
        self.providers: dict[int, str] = {}  # attempt -> provider
        self.released: dict[int, list[int]] = {}
        self.sent: set[int] = set()
        self.sent_at: dict[int, float] = {}
        self.ended: set[int] = set()  # attempts that reported a terminal event themselves
        self.fed: dict[int, list[bytes]] = {}  # attempt -> chunks fed, in order
        self.committed: int | None = None
        self.client_done: Action | None = None
        self.state, actions = start(settings, prompt_tokens)
        self._apply(actions, None)

    # -- driving ------------------------------------------------------------------------

    def feed(self, event: Event, at: float | None = None) -> list[Action]:
        if at is not None:
            assert at >= self.now, "the clock never goes back"
            self.now = at
        if isinstance(event, Timer):
            assert event in self.armed, f"fired a timer that is not armed: {event}"
            self.armed.discard(event)
        if isinstance(event, Chunk) and event.attempt not in self.released:
            # What the machine may still deliver; a released attempt's frames are stale.
            self.fed.setdefault(event.attempt, []).append(event.payload)
        if isinstance(event, ProviderError | Disconnected | Completed):
            self.ended.add(event.attempt)
        if isinstance(event, Reserved):
            self.reserving.pop(event.attempt)
            self.providers[event.attempt] = event.provider
        elif isinstance(event, NoProvider):
            self.reserving.pop(event.attempt)
        self.state, actions = step(self.state, event, self.now)
        self._apply(actions, event)
        return actions

    def reserved(self, attempt: int, provider: str, version: str = "1.0") -> list[Action]:
        return self.feed(Reserved(attempt, provider, version))

    def timer(self, kind: TimerKind, attempt: int | None = None) -> Timer:
        found = [t for t in self.armed if t.kind is kind and attempt in (None, t.attempt)]
        assert len(found) == 1, f"{kind} armed: {found}"
        return found[0]

    def fire(self, kind: TimerKind, attempt: int | None = None) -> list[Action]:
        timer = self.timer(kind, attempt)
        return self.feed(timer, at=timer.at)

    def is_armed(self, kind: TimerKind, attempt: int | None = None) -> bool:
        return any(t.kind is kind and attempt in (None, t.attempt) for t in self.armed)

    # -- contract checks ----------------------------------------------------------------

    def _apply(self, actions: list[Action], event: Event | None) -> None:
        for action in actions:
            self.log.append(action)
            if isinstance(action, Reserve):
                assert action.attempt not in self.reserving and action.attempt not in self.providers
                assert self.committed is None, "B3: no selection after commit"
                # Retries and backups never queue; every provider tried is excluded.
                assert action.may_queue == (action.attempt == 1)
                assert set(self.providers.values()) <= action.exclude
                self.reserving[action.attempt] = action
            elif isinstance(action, AbortReserve):
                assert action.attempt in self.reserving
            elif isinstance(action, Send):
                assert action.attempt in self.providers and action.attempt not in self.released
                assert action.attempt not in self.sent and self.committed is None
                self.sent.add(action.attempt)
                self.sent_at[action.attempt] = self.now
            elif isinstance(action, Cancel):
                assert action.attempt in self.sent and action.attempt not in self.ended
                assert action.attempt not in self.released, "cancel before release"
            elif isinstance(action, Release):
                assert action.attempt in self.providers, "release of a slot never reserved"
                self.released.setdefault(action.attempt, []).append(action.status_code)
                if action.status_code == SUCCESS:
                    # B9: success only on Complete.
                    assert isinstance(event, Completed) and event.attempt == action.attempt
                self._check_outcome(action, actions)
                self._check_slow(action, actions, event)
            elif isinstance(action, SetTimer):
                assert action.timer not in self.armed
                assert action.timer.at >= self.now
                self.armed.add(action.timer)
            elif isinstance(action, ClearTimer):
                assert action.timer in self.armed, f"clear of unarmed {action.timer}"
                self.armed.discard(action.timer)
            elif isinstance(action, Commit):
                assert self.committed is None and self.client_done is None
                assert action.attempt in self.sent
                # B1/B5: the held preamble of the winner, in order, and only the winner's.
                assert list(action.chunks) == self.fed.get(action.attempt, [])
                assert action.provider == self.providers[action.attempt]
                assert action.dispatches == len(self.sent)
                self.committed = action.attempt
            elif isinstance(action, Relay):
                assert self.committed is not None and self.client_done is None
                assert isinstance(event, Chunk) and event.attempt == self.committed
            elif isinstance(action, Finish | InBandError):
                assert self.committed is not None and self.client_done is None
                self.client_done = action
            elif isinstance(action, Fail):
                assert self.committed is None and self.client_done is None
                self.client_done = action

    def _check_outcome(self, release: Release, actions: list[Action]) -> None:
        """The metrics outcome a Release carries agrees with its status and with what the
        same step decided: a pre-commit failure is a retry exactly when the request goes on
        (these actions do not fail it); after commit every failure is final."""
        status, outcome = release.status_code, release.outcome
        assert (status == SUCCESS) == (outcome is Outcome.SUCCESS)
        assert (status == CANCELLED) == (outcome is Outcome.CANCELLED)
        if status in (SUCCESS, CANCELLED):
            return
        if status == 504:
            assert outcome is Outcome.TIMEOUT
        elif release.attempt == self.committed:
            assert outcome is Outcome.FAILURE
        else:
            fails = any(isinstance(a, Fail) for a in actions)
            assert outcome is (Outcome.FAILURE if fails else Outcome.RETRY_PRECONTENT)

    def _check_slow(self, release: Release, actions: list[Action], event: Event | None) -> None:
        """C5: a release is `slow` exactly when the attempt had no content in its time: its
        own first-content timer fired, or another attempt committed after it had run at
        least the race point. Never for a client gone, a shutdown or a provider's error."""
        own_timer = (
            isinstance(event, Timer)
            and event.attempt == release.attempt
            and event.kind is not TimerKind.IDLE
            and release.status_code == 504
        )
        overtaken = (
            release.status_code == CANCELLED
            and any(isinstance(a, Commit) and a.attempt != release.attempt for a in actions)
            and self.now - self.sent_at.get(release.attempt, self.now) >= self.race_point()
        )
        assert release.slow == (own_timer or overtaken), (release, event)

    def race_point(self) -> float:
        return min(self.settings.speculative_ratio, 1.0) * self.state.ttft_deadline_s

    def close(self) -> None:
        """B12: the request is over, every reservation was released exactly once, no timer
        is left armed, and the client got exactly one ending (none if it went away)."""
        assert self.state.finished, f"not finished: {self.state.phase}"
        assert not self.reserving
        assert self.released.keys() == self.providers.keys()
        for attempt, codes in self.released.items():
            assert len(codes) == 1, f"attempt {attempt} released {codes}"
        assert not self.armed, f"timers left armed: {self.armed}"
        if self.state.phase is Phase.CANCELLED:
            assert self.client_done is None
        else:
            assert self.client_done is not None
        if self.committed is not None:
            winner = self.fed.get(self.committed, [])
            relayed = [c for a in self.log if isinstance(a, Commit | Relay) for c in a.chunks]
            assert relayed == winner, "the client sees exactly the winner's chunks"

    def phase(self) -> Phase:
        return self.state.phase

    def abandon(self) -> None:
        """The client leaves; outstanding reserves come back empty; then close()."""
        self.feed(ClientGone())
        for attempt in list(self.reserving):
            self.feed(NoProvider(attempt))
        self.close()

    def releases(self) -> dict[int, int]:
        return {a: codes[0] for a, codes in self.released.items()}

    def reserves(self) -> list[Reserve]:
        return [a for a in self.log if isinstance(a, Reserve)]


def sent_one(settings: DispatchSettings = S, provider: str = "pA") -> Run:
    run = Run(settings)
    run.reserved(1, provider)
    return run


def committed_one(settings: DispatchSettings = S) -> Run:
    run = sent_one(settings)
    run.feed(text(1, b"first"), at=1.0)
    return run


# ---- settings, start ------------------------------------------------------------------


def test_settings_defaults_are_behavior_constants() -> None:
    assert S == DispatchSettings(
        max_dispatch_attempts=3,
        ttft_base_s=5.0,
        ttft_per_token_s=0.001,
        speculative_ratio=0.5,
        preamble_content_timeout_s=90.0,
        inference_timeout_s=600.0,
        max_held_preamble=8,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"max_dispatch_attempts": 0},
        {"max_held_preamble": -1},
        {"ttft_base_s": -1.0},
        {"speculative_ratio": float("nan")},
        {"inference_timeout_s": -0.1},
    ],
)
def test_settings_reject_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DispatchSettings(**bad)  # type: ignore[arg-type]


def test_deadline_is_base_plus_per_token_computed_once_per_request() -> None:
    run = Run(S, prompt_tokens=2000)
    assert run.state.ttft_deadline_s == pytest.approx(7.0)
    actions = run.feed(Reserved(1, "pA", "1.0"), at=10.0)
    assert actions == [Send(1), SetTimer(T(DEADLINE, 1, 17.0)), SetTimer(T(SPEC, 1, 13.5))]
    run.feed(ProviderError(1, 500), at=11.0)
    # The retry gets the same deadline, measured from its own send.
    assert run.reserved(2, "pB")[:3] == [
        Send(2),
        SetTimer(T(DEADLINE, 2, 18.0)),
        SetTimer(T(SPEC, 2, 14.5)),
    ]
    run.abandon()


def test_start_reserves_the_first_attempt_which_may_queue() -> None:
    state, actions = start(S, 0)
    assert actions == [Reserve(1, frozenset(), None, may_queue=True, backup=False)]
    assert state.phase is Phase.SELECTING


# ---- B1: hold preamble, commit on first content ----------------------------------------


def test_b1_preamble_is_held_and_sent_in_order_at_commit() -> None:
    run = sent_one()
    assert run.phase() is Phase.WAITING_FIRST_CONTENT
    assert run.feed(Chunk(1, b"role", True), at=0.5) == []
    assert run.feed(Chunk(1, b"usage-role", True), at=0.6) == []
    assert run.feed(Chunk(1, b"Hello", False), at=1.0) == [
        ClearTimer(T(DEADLINE, 1, 5.0)),
        ClearTimer(T(SPEC, 1, 2.5)),
        Commit(1, "pA", "1.0", (b"role", b"usage-role", b"Hello"), 1, False),
        SetTimer(T(IDLE, 1, 601.0)),
    ]
    assert run.phase() is Phase.COMMITTED
    assert run.feed(text(1, b" world"), at=2.0) == [Relay((b" world",))]
    assert run.feed(Chunk(1, b"late-role", True)) == [Relay((b"late-role",))]
    assert run.feed(Completed(1, USAGE), at=3.0) == [
        ClearTimer(T(IDLE, 1, 601.0)),
        Release(1, SUCCESS, Outcome.SUCCESS),
        Finish(USAGE),
    ]
    assert run.phase() is Phase.DONE
    run.close()


def test_b1_past_max_held_preamble_a_chunk_commits() -> None:
    run = sent_one()
    for i in range(8):
        assert run.feed(Chunk(1, b"r%d" % i, True)) == []
    actions = run.feed(Chunk(1, b"r8", True))
    commit = next(a for a in actions if isinstance(a, Commit))
    assert len(commit.chunks) == 9
    run.feed(Completed(1))
    run.close()


def test_b1_max_held_zero_commits_on_the_first_chunk() -> None:
    run = sent_one(replace(S, max_held_preamble=0))
    assert any(isinstance(a, Commit) for a in run.feed(role(1)))
    run.feed(Completed(1))
    run.close()


# ---- B2: pre-commit failure is invisible ----------------------------------------------


def test_b2_error_after_preamble_drops_held_and_retries_on_another_provider() -> None:
    run = sent_one()
    run.feed(role(1), at=0.5)
    assert run.feed(ProviderError(1, 500, "template crash"), at=1.0) == [
        ClearTimer(T(SPEC, 1, 2.5)),
        ClearTimer(T(DEADLINE, 1, 5.0)),
        Release(1, 500, Outcome.RETRY_PRECONTENT),
        Reserve(2, frozenset({"pA"}), "1.0", may_queue=False, backup=False),
    ]
    run.reserved(2, "pB", "2.0")
    actions = run.feed(text(2, b"Hi"), at=2.0)
    # The held role chunk of pA is gone: the client sees pB's stream only.
    assert Commit(2, "pB", "2.0", (b"Hi",), 2, False) in actions
    run.feed(Completed(2))
    assert run.releases() == {1: 500, 2: SUCCESS}
    assert not any(isinstance(a, InBandError | Fail) for a in run.log)
    run.close()


def test_b2_disconnect_before_content_is_502_and_retries() -> None:
    run = sent_one()
    run.feed(role(1))
    actions = run.feed(Disconnected(1))
    assert Release(1, 502, Outcome.RETRY_PRECONTENT) in actions and Cancel(1) not in actions
    assert actions[-1] == Reserve(2, frozenset({"pA"}), "1.0", False, False)
    run.reserved(2, "pB")
    run.feed(text(2))
    run.feed(Completed(2))
    run.close()


@pytest.mark.parametrize("status", [0, 200, 299, 700, -1])
def test_b2_error_frame_without_an_error_code_counts_as_502(status: int) -> None:
    run = sent_one()
    assert Release(1, 502, Outcome.RETRY_PRECONTENT) in run.feed(ProviderError(1, status))
    run.abandon()


@pytest.mark.parametrize("status", [429, 500, 501, 503, 504, 401, 404])
def test_b11_other_provider_codes_are_retried(status: int) -> None:
    run = sent_one()
    actions = run.feed(ProviderError(1, status, "x"))
    outcome = Outcome.TIMEOUT if status == 504 else Outcome.RETRY_PRECONTENT
    assert Release(1, status, outcome) in actions and isinstance(actions[-1], Reserve)
    run.abandon()


# ---- B3: after commit, errors are in-band and never retried ----------------------------


def test_b3_error_after_content_is_in_band_and_never_retried() -> None:
    run = committed_one()
    assert run.feed(ProviderError(1, 500, "boom"), at=2.0) == [
        ClearTimer(T(IDLE, 1, 601.0)),
        Release(1, 500, Outcome.FAILURE),
        InBandError(500, ErrorCode.PROVIDER_ERROR, "boom"),
    ]
    assert run.phase() is Phase.DONE
    assert len(run.reserves()) == 1
    run.close()


def test_b3_disconnect_after_content_is_in_band_502() -> None:
    run = committed_one()
    actions = run.feed(Disconnected(1))
    assert actions[-2:] == [
        Release(1, 502, Outcome.FAILURE),
        InBandError(502, ErrorCode.PROVIDER_ERROR, "provider disconnected"),
    ]
    run.close()


def test_b9_a_stream_that_ends_without_complete_is_502_not_success() -> None:
    """The driver feeds `Disconnected` for any end of an attempt's stream other than
    Complete or an error frame: after content it is a 502 strike, never a success."""
    run = committed_one()
    run.feed(text(1, b"more"), at=2.0)
    actions = run.feed(Disconnected(1))
    assert Release(1, 502, Outcome.FAILURE) in actions and isinstance(actions[-1], InBandError)
    assert run.releases() == {1: 502}
    run.close()


def test_b3_four_xx_after_commit_is_in_band_too() -> None:
    run = committed_one()
    assert run.feed(ProviderError(1, 400, "bad"))[-1] == InBandError(
        400, ErrorCode.INVALID_REQUEST, "bad"
    )
    run.close()


# ---- B4: preamble then clean complete --------------------------------------------------


def test_b4_preamble_then_complete_commits_an_empty_completion() -> None:
    run = sent_one()
    run.feed(role(1), at=0.2)
    assert run.feed(Completed(1, USAGE), at=0.3) == [
        ClearTimer(T(DEADLINE, 1, 5.0)),
        ClearTimer(T(SPEC, 1, 2.5)),
        Commit(1, "pA", "1.0", (b"role",), 1, False),
        SetTimer(T(IDLE, 1, 0.3 + 600.0)),
        ClearTimer(T(IDLE, 1, 0.3 + 600.0)),
        Release(1, SUCCESS, Outcome.SUCCESS),
        Finish(USAGE),
    ]
    assert run.phase() is Phase.DONE
    run.close()


def test_b4_complete_with_no_chunk_at_all_is_an_empty_completion() -> None:
    run = sent_one()
    actions = run.feed(Completed(1))
    assert Commit(1, "pA", "1.0", (), 1, False) in actions and actions[-1] == Finish(Usage())
    run.close()


# ---- B5: speculative race --------------------------------------------------------------


def racing(primary_preamble: bool = False) -> Run:
    run = sent_one()
    if primary_preamble:
        run.feed(role(1), at=1.0)
    assert run.fire(SPEC) == [Reserve(2, frozenset({"pA"}), None, may_queue=False, backup=True)]
    assert run.now == 2.5
    assert run.reserved(2, "pB", "2.0") == [Send(2), SetTimer(T(DEADLINE, 2, 7.5))]
    return run


def test_b5_backup_dispatched_at_ratio_times_deadline_excluding_tried() -> None:
    run = racing()
    assert not run.is_armed(SPEC), "one backup per primary; a backup gets none"
    run.abandon()


def test_b5_backup_first_content_wins_and_primary_is_cancelled() -> None:
    run = racing(primary_preamble=True)
    assert run.feed(text(2, b"B"), at=3.0) == [
        ClearTimer(T(DEADLINE, 2, 7.5)),
        Cancel(1),
        ClearTimer(T(DEADLINE, 1, 5.0)),
        Release(1, CANCELLED, Outcome.CANCELLED, slow=True),  # C5: it had the race point
        Commit(2, "pB", "2.0", (b"B",), 2, True),
        SetTimer(T(IDLE, 2, 603.0)),
    ]
    # The loser's late frames are ignored.
    assert run.feed(text(1, b"A")) == []
    assert run.feed(ProviderError(1, 500)) == []
    run.feed(Completed(2))
    run.close()


def test_b5_backup_preamble_alone_does_not_win() -> None:
    run = racing()
    assert run.feed(role(2), at=3.0) == []
    actions = run.feed(text(1, b"A"), at=4.0)
    assert Commit(1, "pA", "1.0", (b"A",), 2, False) in actions
    assert Release(2, CANCELLED, Outcome.CANCELLED) in actions and Cancel(2) in actions
    run.feed(Completed(1))
    run.close()


def test_b5_held_chunks_never_mix_providers() -> None:
    run = racing(primary_preamble=True)
    run.feed(Chunk(2, b"B-role", True), at=3.0)
    actions = run.feed(text(2, b"B-text"), at=3.5)
    assert Commit(2, "pB", "2.0", (b"B-role", b"B-text"), 2, True) in actions
    run.feed(Completed(2))
    run.close()


def test_b5_primary_error_mid_race_leaves_the_backup_racing_alone() -> None:
    run = racing()
    actions = run.feed(ProviderError(1, 500), at=3.0)
    assert actions == [ClearTimer(T(DEADLINE, 1, 5.0)), Release(1, 500, Outcome.RETRY_PRECONTENT)]
    actions = run.feed(text(2), at=4.0)
    assert any(isinstance(a, Commit) for a in actions)
    run.feed(Completed(2))
    run.close()


def test_b5_backup_error_mid_race_leaves_the_primary_racing_alone() -> None:
    run = racing()
    assert run.feed(Disconnected(2)) == [
        ClearTimer(T(DEADLINE, 2, 7.5)),
        Release(2, 502, Outcome.RETRY_PRECONTENT),
    ]
    assert not run.is_armed(SPEC), "no second backup"
    run.feed(text(1))
    run.feed(Completed(1))
    run.close()


def test_b5_no_backup_available_keeps_waiting_on_the_primary() -> None:
    run = sent_one()
    run.fire(SPEC)
    assert run.feed(NoProvider(2, full=True)) == []
    assert run.phase() is Phase.WAITING_FIRST_CONTENT
    run.feed(text(1))
    run.feed(Completed(1))
    run.close()


def test_b5_backup_reserve_still_pending_at_commit_is_aborted_and_released() -> None:
    run = sent_one()
    run.fire(SPEC)
    actions = run.feed(text(1))
    assert AbortReserve(2) in actions
    run.feed(Completed(1))
    assert not run.state.finished, "a reserve is still outstanding"
    assert run.reserved(2, "pB") == [Release(2, CANCELLED, Outcome.CANCELLED)]
    run.close()


def test_b5_primary_fails_while_backup_reserve_pending_backup_takes_over() -> None:
    run = sent_one()
    run.fire(SPEC)
    assert run.feed(ProviderError(1, 500)) == [
        ClearTimer(T(DEADLINE, 1, 5.0)),
        Release(1, 500, Outcome.RETRY_PRECONTENT),
    ]
    run.reserved(2, "pB")
    run.feed(text(2))
    run.feed(Completed(2))
    run.close()


def test_b5_primary_fails_while_backup_reserve_pending_and_none_comes() -> None:
    run = sent_one()
    run.fire(SPEC)
    run.feed(ProviderError(1, 500, "boom"))
    assert run.feed(NoProvider(2)) == [Fail(500, ErrorCode.PROVIDER_ERROR, "boom")]
    run.close()


def test_b5_each_retry_gets_its_own_speculative_timer() -> None:
    run = sent_one()
    run.feed(ProviderError(1, 500), at=1.0)
    run.reserved(2, "pB")
    assert run.timer(SPEC) == T(SPEC, 2, 3.5)
    run.abandon()


@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_b5_ratio_of_one_or_more_disables_the_race(ratio: float) -> None:
    run = sent_one(replace(S, speculative_ratio=ratio))
    assert not run.is_armed(SPEC)
    run.abandon()


def test_b5_ratio_zero_races_at_once() -> None:
    run = sent_one(replace(S, speculative_ratio=0.0))
    assert run.timer(SPEC).at == 0.0
    run.fire(SPEC)
    run.reserved(2, "pB")
    run.feed(ClientGone())
    assert run.releases() == {1: CANCELLED, 2: CANCELLED}
    run.close()


# ---- B6: Accepted (cold load) ----------------------------------------------------------


def test_b6_accepted_gets_inference_timeout_and_is_still_raced() -> None:
    run = sent_one()
    assert run.feed(Accepted(1), at=1.0) == [
        ClearTimer(T(DEADLINE, 1, 5.0)),
        SetTimer(T(ACCEPTED, 1, 601.0)),
    ]
    assert run.feed(Accepted(1), at=2.0) == [], "a repeated Accepted does not extend"
    # B6/B5: the promise replaces the deadline, not the race.
    assert run.fire(SPEC) == [Reserve(2, frozenset({"pA"}), None, may_queue=False, backup=True)]
    assert run.feed(NoProvider(2, full=True)) == [], "no backup: the promise is waited for"
    run.feed(role(1), at=300.0)
    actions = run.feed(text(1), at=400.0)
    assert ClearTimer(T(ACCEPTED, 1, 601.0)) in actions and any(
        isinstance(a, Commit) for a in actions
    )
    run.feed(Completed(1))
    run.close()


def test_b6_accepted_primary_loses_to_the_backups_first_content_and_is_slow() -> None:
    """The Accepted-forever liar's request: the backup goes out at the usual point and its
    first content wins; the liar is cancelled and released as a slow sample (C5)."""
    run = sent_one()
    run.feed(Accepted(1), at=0.1)
    run.fire(SPEC)
    run.reserved(2, "pB", "2.0")
    actions = run.feed(text(2, b"B"), at=2.6)
    assert Commit(2, "pB", "2.0", (b"B",), 2, True) in actions
    assert Cancel(1) in actions and ClearTimer(T(ACCEPTED, 1, 600.1)) in actions
    assert Release(1, CANCELLED, Outcome.CANCELLED, slow=True) in actions
    run.feed(Completed(2))
    run.close()


def test_b6_accepted_primary_whose_content_beats_the_backup_wins() -> None:
    run = sent_one()
    run.feed(Accepted(1), at=0.1)
    run.fire(SPEC)
    run.reserved(2, "pB", "2.0")
    actions = run.feed(text(1, b"A"), at=3.0)
    assert Commit(1, "pA", "1.0", (b"A",), 2, False) in actions
    # The backup had run 0.5 s, less than the race point: no judgement of its speed (C5).
    assert Release(2, CANCELLED, Outcome.CANCELLED, slow=False) in actions
    run.feed(Completed(1))
    run.close()


def test_b6_a_lie_keeps_the_normal_deadline() -> None:
    """Accepted that the driver found implausible (the provider already served the model,
    or its one cold load ran out) changes nothing: the deadline stands, then a 504."""
    run = sent_one(NO_RACE)
    assert run.feed(Accepted(1, plausible=False), at=1.0) == []
    assert run.timer(DEADLINE) == T(DEADLINE, 1, 5.0)
    assert run.fire(DEADLINE) == [
        Cancel(1),
        Release(1, 504, Outcome.TIMEOUT, slow=True),
        Reserve(2, frozenset({"pA"}), "1.0", may_queue=False, backup=False),
    ]
    run.abandon()


def test_b6_b9_a_broken_promise_is_a_504_strike_and_a_slow_sample() -> None:
    run = sent_one()
    run.feed(Accepted(1), at=1.0)
    run.fire(SPEC)
    run.feed(NoProvider(2, full=True))
    assert run.fire(ACCEPTED) == [
        Cancel(1),
        Release(1, 504, Outcome.TIMEOUT, slow=True),
        Reserve(3, frozenset({"pA"}), "1.0", may_queue=False, backup=False),
    ]
    run.abandon()


def test_b6_backup_accepted_mid_race_does_not_touch_the_primary() -> None:
    run = racing()
    assert run.feed(Accepted(2), at=3.0) == [
        ClearTimer(T(DEADLINE, 2, 7.5)),
        SetTimer(T(ACCEPTED, 2, 603.0)),
    ]
    assert run.is_armed(DEADLINE, 1)
    run.abandon()


# ---- B7 / B8: deadlines ----------------------------------------------------------------


def test_b7_deadline_with_preamble_extends_once_then_504_and_fails_over() -> None:
    run = sent_one(NO_RACE)
    run.feed(role(1), at=1.0)
    assert run.fire(DEADLINE) == [SetTimer(T(PREAMBLE, 1, 95.0))]
    run.feed(role(1), at=50.0)
    assert run.fire(PREAMBLE) == [
        Cancel(1),
        Release(1, 504, Outcome.TIMEOUT, slow=True),
        Reserve(2, frozenset({"pA"}), "1.0", may_queue=False, backup=False),
    ]
    run.abandon()


def test_b7_content_within_the_extension_commits() -> None:
    run = sent_one(NO_RACE)
    run.feed(role(1), at=1.0)
    run.fire(DEADLINE)
    actions = run.feed(text(1), at=60.0)
    assert ClearTimer(T(PREAMBLE, 1, 95.0)) in actions
    assert Commit(1, "pA", "1.0", (b"role", b"text"), 1, False) in actions
    run.feed(Completed(1))
    run.close()


def test_b7_accepted_during_the_extension_switches_to_the_cold_load_budget() -> None:
    run = sent_one(NO_RACE)
    run.feed(role(1), at=1.0)
    run.fire(DEADLINE)
    assert run.feed(Accepted(1), at=10.0) == [
        ClearTimer(T(PREAMBLE, 1, 95.0)),
        SetTimer(T(ACCEPTED, 1, 610.0)),
    ]
    run.abandon()


def test_b8_deadline_with_nothing_is_a_504_and_fails_over() -> None:
    run = sent_one(NO_RACE)
    assert run.fire(DEADLINE) == [
        Cancel(1),
        Release(1, 504, Outcome.TIMEOUT, slow=True),
        Reserve(2, frozenset({"pA"}), "1.0", may_queue=False, backup=False),
    ]
    run.abandon()


# ---- B9: breaker feed on every arm -----------------------------------------------------


def test_b9_racers_that_held_preamble_both_strike_504() -> None:
    run = racing(primary_preamble=True)
    run.feed(role(2), at=3.0)
    assert run.fire(DEADLINE, 1) == [SetTimer(T(PREAMBLE, 1, 95.0))]
    assert run.fire(DEADLINE, 2) == [SetTimer(T(PREAMBLE, 2, 97.5))]
    assert run.fire(PREAMBLE, 1) == [Cancel(1), Release(1, 504, Outcome.TIMEOUT, slow=True)]
    assert run.fire(PREAMBLE, 2) == [
        Cancel(2),
        Release(2, 504, Outcome.TIMEOUT, slow=True),
        Reserve(3, frozenset({"pA", "pB"}), "2.0", may_queue=False, backup=False),
    ]
    assert run.releases() == {1: 504, 2: 504}
    run.abandon()


def test_b9_racers_with_nothing_strike_504_at_their_deadlines() -> None:
    run = racing()
    assert run.fire(DEADLINE, 1) == [Cancel(1), Release(1, 504, Outcome.TIMEOUT, slow=True)]
    actions = run.fire(DEADLINE, 2)
    assert actions[:2] == [Cancel(2), Release(2, 504, Outcome.TIMEOUT, slow=True)] and isinstance(
        actions[2], Reserve
    )
    run.abandon()


def test_b9_post_commit_idle_gap_is_in_band_timeout_and_a_504_strike() -> None:
    run = committed_one()
    assert run.timer(IDLE) == T(IDLE, 1, 601.0)
    run.feed(text(1, b"more"), at=100.0)
    # Chunks re-arm nothing; the idle timer re-arms itself from the last chunk.
    assert run.fire(IDLE) == [SetTimer(T(IDLE, 1, 700.0))]
    assert run.fire(IDLE) == [
        Cancel(1),
        Release(1, 504, Outcome.TIMEOUT),
        InBandError(504, ErrorCode.TIMEOUT, "no chunk within the inference timeout"),
    ]
    run.close()


def test_b9_success_is_released_only_on_complete() -> None:
    for ending in (ProviderError(1, 500), Disconnected(1)):
        run = committed_one()
        run.feed(ending)
        assert SUCCESS not in run.releases().values()
        run.close()


# ---- B10 / B11: selection and the final failure ----------------------------------------


def test_b10_next_selection_avoids_the_failed_version() -> None:
    run = sent_one(provider="pA")
    run.feed(ProviderError(1, 500))
    run.reserved(2, "pB", "2.0")
    run.feed(Disconnected(2))
    assert [r.avoid_version for r in run.reserves()] == [None, "1.0", "2.0"]
    assert run.reserves()[2].exclude == frozenset({"pA", "pB"})
    run.abandon()


def test_b10_backup_carries_the_last_failed_version() -> None:
    run = sent_one()
    run.feed(ProviderError(1, 500))
    run.reserved(2, "pB", "2.0")
    run.fire(SPEC)
    assert run.reserves()[-1] == Reserve(3, frozenset({"pA", "pB"}), "1.0", False, True)
    run.abandon()


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_b11_client_errors_fail_at_once(status: int) -> None:
    run = sent_one()
    run.feed(role(1))
    assert run.feed(ProviderError(1, status, "too big")) == [
        ClearTimer(T(SPEC, 1, 2.5)),
        ClearTimer(T(DEADLINE, 1, 5.0)),
        Release(1, status, Outcome.FAILURE),
        Fail(status, ErrorCode.INVALID_REQUEST, "too big"),
    ]
    assert run.phase() is Phase.FAILED
    run.close()


def test_b11_client_error_mid_race_fails_and_cancels_the_other_racer() -> None:
    run = racing()
    assert run.feed(ProviderError(2, 422, "schema")) == [
        ClearTimer(T(DEADLINE, 2, 7.5)),
        Release(2, 422, Outcome.FAILURE),
        Cancel(1),
        ClearTimer(T(DEADLINE, 1, 5.0)),
        Release(1, CANCELLED, Outcome.CANCELLED),
        Fail(422, ErrorCode.INVALID_REQUEST, "schema"),
    ]
    run.close()


def test_b11_attempts_exhausted_fail_with_the_last_real_error_504_for_timeouts() -> None:
    run = sent_one(NO_RACE)
    run.feed(ProviderError(1, 500))
    run.reserved(2, "pB")
    run.feed(Disconnected(2))
    run.reserved(3, "pC")
    actions = run.fire(DEADLINE, 3)
    assert actions[-1] == Fail(504, ErrorCode.TIMEOUT, "no content before the first-token deadline")
    assert len(run.reserves()) == 3
    run.close()


def test_b11_attempts_exhausted_with_a_provider_code() -> None:
    run = sent_one(replace(S, max_dispatch_attempts=2))
    run.feed(Disconnected(1))
    run.reserved(2, "pB")
    assert run.feed(ProviderError(2, 503, "busy"))[-1] == Fail(
        503, ErrorCode.PROVIDER_ERROR, "busy"
    )
    run.close()


def test_b11_backups_do_not_count_against_attempts() -> None:
    run = Run(replace(S, max_dispatch_attempts=2))
    for primary, backup in ((1, 2), (3, 4)):
        run.reserved(primary, f"p{primary}")
        run.fire(SPEC)
        run.reserved(backup, f"p{backup}")
        run.feed(ProviderError(primary, 500))
        run.feed(ProviderError(backup, 500, "last"))
    assert run.log[-1] == Fail(500, ErrorCode.PROVIDER_ERROR, "last")
    assert [r.backup for r in run.reserves()] == [False, True, False, True]
    run.close()


def test_b11_first_reserve_finds_everyone_full_429_with_retry_after() -> None:
    run = Run()
    assert run.feed(NoProvider(1, full=True, retry_after_s=6.0)) == [
        Fail(429, ErrorCode.RATE_LIMIT_EXCEEDED, "all capable providers are busy", 6.0)
    ]
    run.close()


def test_b11_first_reserve_finds_nothing_503() -> None:
    run = Run()
    assert run.feed(NoProvider(1, full=False, retry_after_s=2.0, message="none online")) == [
        Fail(503, ErrorCode.MODEL_UNAVAILABLE, "none online", 2.0)
    ]
    run.close()


def test_b11_no_provider_for_a_retry_fails_with_the_last_real_error() -> None:
    run = sent_one()
    run.feed(ProviderError(1, 500, "crash"))
    assert run.feed(NoProvider(2, full=True)) == [Fail(500, ErrorCode.PROVIDER_ERROR, "crash")]
    run.close()


def test_retries_never_queue_only_the_first_reserve_may() -> None:
    run = sent_one(replace(S, max_dispatch_attempts=5))
    for n in range(2, 6):
        run.feed(ProviderError(n - 1, 500))
        run.reserved(n, f"p{n}")
    assert [r.may_queue for r in run.reserves()] == [True, False, False, False, False]
    run.abandon()


# ---- B12: exactly-once release on every path -------------------------------------------


def test_b12_client_gone_mid_race_cancels_and_releases_everything() -> None:
    run = racing(primary_preamble=True)
    assert run.feed(ClientGone()) == [
        Cancel(1),
        ClearTimer(T(DEADLINE, 1, 5.0)),
        Release(1, CANCELLED, Outcome.CANCELLED),
        Cancel(2),
        ClearTimer(T(DEADLINE, 2, 7.5)),
        Release(2, CANCELLED, Outcome.CANCELLED),
    ]
    assert run.phase() is Phase.CANCELLED
    assert run.feed(text(1)) == [] and run.feed(ClientGone()) == []
    run.close()


def test_b12_client_gone_while_the_first_reserve_is_queued() -> None:
    run = Run()
    assert run.feed(ClientGone()) == [AbortReserve(1)]
    assert not run.state.finished
    assert run.reserved(1, "pA") == [Release(1, CANCELLED, Outcome.CANCELLED)]
    run.close()


def test_b12_client_gone_while_queued_and_the_reserve_is_given_up() -> None:
    run = Run()
    run.feed(ClientGone())
    assert run.feed(NoProvider(1)) == []
    run.close()


def test_b12_client_gone_after_commit() -> None:
    run = committed_one()
    assert run.feed(ClientGone()) == [
        Cancel(1),
        ClearTimer(T(IDLE, 1, 601.0)),
        Release(1, CANCELLED, Outcome.CANCELLED),
    ]
    run.close()


def test_b12_shutdown_before_commit_fails_503() -> None:
    run = racing()
    actions = run.feed(Shutdown())
    assert run.releases() == {1: CANCELLED, 2: CANCELLED}
    assert actions[-1] == Fail(503, ErrorCode.SHUTTING_DOWN, "dispatcher shutting down")
    assert run.phase() is Phase.FAILED
    run.close()


def test_b12_shutdown_after_commit_is_in_band() -> None:
    run = committed_one()
    actions = run.feed(Shutdown())
    assert actions[-2:] == [
        Release(1, CANCELLED, Outcome.CANCELLED),
        InBandError(503, ErrorCode.SHUTTING_DOWN, "dispatcher shutting down"),
    ]
    run.close()


def test_b12_reserved_for_an_attempt_never_reserved_is_a_driver_bug() -> None:
    run = sent_one()
    with pytest.raises(ValueError):
        step(run.state, Reserved(1, "pA", "1.0"), 0.0)
    with pytest.raises(ValueError):
        step(run.state, NoProvider(7), 0.0)


# ---- staleness, phases, coalescing -----------------------------------------------------


def test_stale_timers_and_unknown_attempts_are_ignored() -> None:
    run = sent_one()
    state = run.state
    for event in (
        T(DEADLINE, 1, 4.0),  # not the armed one
        T(IDLE, 1, 601.0),
        T(SPEC, 9, 2.5),
        text(9),
        Accepted(9),
        ProviderError(9, 500),
        Completed(9),
    ):
        assert step(state, event, 1.0) == (state, [])
    run.abandon()


def test_a_cleared_timer_delivered_late_is_ignored() -> None:
    run = sent_one()
    run.feed(Accepted(1), at=1.0)
    assert step(run.state, T(DEADLINE, 1, 5.0), 5.0)[1] == []
    assert step(run.state, T(SPEC, 1, 2.4), 5.0)[1] == [], "not the armed race timer"
    run.abandon()


def test_events_after_the_end_are_ignored() -> None:
    run = committed_one()
    run.feed(Completed(1))
    for event in (text(1), ProviderError(1, 500), T(IDLE, 1, 601.0), ClientGone(), Shutdown()):
        assert step(run.state, event, 700.0) == (run.state, [])
    run.close()


def test_phases_follow_the_design() -> None:
    run = Run()
    phases = [run.state.phase]
    run.reserved(1, "pA")
    phases.append(run.state.phase)
    run.feed(text(1))
    phases.append(run.state.phase)
    run.feed(Completed(1))
    phases.append(run.state.phase)
    assert phases == [Phase.SELECTING, Phase.WAITING_FIRST_CONTENT, Phase.COMMITTED, Phase.DONE]
    run.close()


def _racing_reserve() -> Run:
    run = sent_one()
    run.fire(SPEC)  # the backup's reserve (attempt 2) is outstanding
    return run


def _then(run: Run, *events: Event) -> Run:
    for event in events:
        run.feed(event)
    return run


# A run in each phase, and the attempt whose reserve answer is still owed there.
IN_PHASE: dict[Phase, Callable[[], tuple[Run, int]]] = {
    Phase.SELECTING: lambda: (Run(), 1),
    Phase.WAITING_FIRST_CONTENT: lambda: (_racing_reserve(), 2),
    Phase.COMMITTED: lambda: (_then(_racing_reserve(), text(1)), 2),
    Phase.DONE: lambda: (_then(_racing_reserve(), text(1), Completed(1)), 2),
    Phase.FAILED: lambda: (_then(_racing_reserve(), Shutdown()), 2),
    Phase.CANCELLED: lambda: (_then(Run(), ClientGone()), 1),
}

# One event of each kind; `owed` is the attempt whose reserve answer is outstanding.
SAMPLE: dict[type, Callable[[Run, int], Event]] = {
    Reserved: lambda run, owed: Reserved(owed, "pZ", "9.0"),
    NoProvider: lambda run, owed: NoProvider(owed, full=True),
    Accepted: lambda run, owed: Accepted(1),
    Chunk: lambda run, owed: text(1),
    ProviderError: lambda run, owed: ProviderError(1, 500),
    Disconnected: lambda run, owed: Disconnected(1),
    Completed: lambda run, owed: Completed(1),
    Timer: lambda run, owed: min(run.armed, key=lambda t: t.at, default=T(DEADLINE, 1, 0.0)),
    ClientGone: lambda run, owed: ClientGone(),
    Shutdown: lambda run, owed: Shutdown(),
}


def test_every_event_kind_and_phase_is_covered_below() -> None:
    assert set(SAMPLE) == set(get_args(Event)), "a new event needs a sample here"
    assert set(IN_PHASE) == set(Phase), "a new phase needs a run here"


@pytest.mark.parametrize("kind", get_args(Event), ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("phase", list(Phase), ids=lambda phase: phase.value)
def test_every_event_is_handled_in_every_phase(phase: Phase, kind: type) -> None:
    """`step` takes every event in every phase (no `assert_never` fires), the fake driver's
    contract checks hold, and the request still ends with every slot released (B12). Once
    decided, only a reserve's owed answer does anything: a slot that comes back is
    released."""
    run, owed = IN_PHASE[phase]()
    assert run.phase() is phase
    event = SAMPLE[kind](run, owed)
    if isinstance(event, Timer) and event not in run.armed:
        assert step(run.state, event, run.now) == (run.state, [])  # stale: nothing armed
    else:
        actions = run.feed(event, at=event.at if isinstance(event, Timer) else None)
        if phase in (Phase.DONE, Phase.FAILED, Phase.CANCELLED):
            expected = [Release(owed, CANCELLED, Outcome.CANCELLED)]
            assert actions == (expected if isinstance(event, Reserved) else [])
    if not run.state.finished:
        run.abandon()
    run.close()


def test_b12_an_aborted_reserve_is_aborted_once_whatever_ends_the_request() -> None:
    """The commit aborts the backup's pending reserve; the ending that follows has nothing
    left to abort, and the late slot is still released exactly once."""
    run = _racing_reserve()
    assert AbortReserve(2) in run.feed(text(1))
    assert not any(isinstance(a, AbortReserve) for a in run.feed(ClientGone()))
    assert run.reserved(2, "pB") == [Release(2, CANCELLED, Outcome.CANCELLED)]
    run.close()


def test_step_all_coalesces_chunks_ready_at_once() -> None:
    run = committed_one()
    state, actions = step_all(
        run.state, [text(1, b"a"), text(1, b"b"), Completed(1), text(1, b"c")], 2.0
    )
    assert actions == [
        Relay((b"a", b"b")),
        ClearTimer(T(IDLE, 1, 601.0)),
        Release(1, SUCCESS, Outcome.SUCCESS),
        Finish(Usage()),
    ]
    assert state.finished


def test_step_never_mutates_the_given_state() -> None:
    run = sent_one()
    before = run.state
    snapshot = repr(before)
    step(before, role(1), 1.0)
    step(before, ProviderError(1, 500), 1.0)
    assert repr(before) == snapshot and isinstance(before, DispatchState)


# ---- every path, generated -------------------------------------------------------------


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.data(), st.sampled_from([S, NO_RACE, replace(S, max_held_preamble=1, speculative_ratio=0.0)])
)
def test_b12_any_event_order_releases_every_slot_exactly_once(
    data: st.DataObject, cfg: DispatchSettings
) -> None:
    """A random driver: any answer to any reserve, any frame from any sent attempt (also
    after it was cancelled), timers in time order, the client leaving. Run's checks hold
    throughout (B1/B3/B5/B9 invariants) and close() holds at the end (B12)."""
    run = Run(cfg, prompt_tokens=data.draw(st.integers(0, 3000)))
    providers = iter(f"p{i}" for i in range(1000))
    seq = 0
    for _ in range(80):
        if run.state.finished:
            break
        # Repeats weight the draw towards progress; the client leaving stays rare.
        options: list[Event] = []
        for attempt in run.reserving:
            version = data.draw(st.sampled_from(["1.0", "2.0"]))
            options += [Reserved(attempt, next(providers), version)] * 4
            options.append(NoProvider(attempt, full=data.draw(st.booleans())))
        for attempt in sorted(run.sent - run.ended):
            seq += 1
            status = data.draw(st.sampled_from([400, 429, 500, 503, 0]))
            options += [Chunk(attempt, b"%d:%d" % (attempt, seq), True)] * 4
            options += [Chunk(attempt, b"%d:%d" % (attempt, seq), False)] * 3
            options += [Accepted(attempt), ProviderError(attempt, status), Disconnected(attempt)]
            options += [Completed(attempt)] * 2 + [Disconnected(attempt)]
        if run.armed:
            options += [min(run.armed, key=lambda t: (t.at, t.kind.value, t.attempt))] * 3
        if not options or data.draw(st.integers(0, 40)) == 0:
            options = [ClientGone(), Shutdown()]
        chosen = data.draw(st.sampled_from(options))
        if isinstance(chosen, Timer):
            run.feed(chosen, at=max(run.now, chosen.at))
        else:
            soonest = min((t.at for t in run.armed), default=run.now + 1.0)
            run.feed(chosen, at=max(run.now, min(soonest, run.now + data.draw(st.floats(0, 1)))))
    if not run.state.finished:
        run.feed(ClientGone())
        for attempt in list(run.reserving):
            run.feed(NoProvider(attempt))
    label(f"{run.phase().value}, {len(run.sent)} dispatches")
    primaries = [r for r in run.reserves() if not r.backup]
    assert len(primaries) <= cfg.max_dispatch_attempts
    run.close()


def _fold(
    state: DispatchState, events: list[Event], now: float
) -> tuple[DispatchState, list[Action]]:
    """step_all's contract, the slow way: fold `step`, then coalesce adjacent Relays."""
    out: list[Action] = []
    for event in events:
        state, actions = step(state, event, now)
        for action in actions:
            if isinstance(action, Relay) and out and isinstance(out[-1], Relay):
                out[-1] = Relay(out[-1].chunks + action.chunks)
            else:
                out.append(action)
    return state, out


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(
        st.sampled_from(["chunk", "preamble", "other_chunk", "complete", "error", "timer"]),
        max_size=12,
    ),
    commit_first=st.booleans(),
)
def test_b1_step_all_fast_path_equals_folding_step(kinds: list[str], commit_first: bool) -> None:
    state, _ = start(DispatchSettings(), 10)
    state, _ = step(state, Reserved(1, "p1", "1.0"), 0.0)
    if commit_first:
        state, _ = step(state, Chunk(1, b'{"c":1}', False), 0.1)
    events: list[Event] = []
    for i, kind in enumerate(kinds):
        if kind == "chunk":
            events.append(Chunk(1, f"c{i}".encode(), False))
        elif kind == "preamble":
            events.append(Chunk(1, f"p{i}".encode(), True))
        elif kind == "other_chunk":
            events.append(Chunk(2, f"o{i}".encode(), False))
        elif kind == "complete":
            events.append(Completed(1))
        elif kind == "error":
            events.append(ProviderError(1, 500, "boom"))
        else:
            events.append(Timer(TimerKind.IDLE, 1, 700.0))
    fast_state, fast_actions = step_all(state, events, 5.0)
    slow_state, slow_actions = _fold(state, events, 5.0)
    assert fast_actions == slow_actions
    assert fast_state == slow_state


@pytest.mark.parametrize(
    ("status", "code"), [(404, ErrorCode.MODEL_NOT_FOUND), (503, ErrorCode.MODEL_UNAVAILABLE)]
)
def test_a7_first_reserve_refusal_is_the_clients_answer(status: int, code: ErrorCode) -> None:
    """The first Reserve is the request's admission: its refusal passes through as is."""
    state, _ = start(DispatchSettings(), 10)
    state, actions = step(
        state, NoProvider(1, message="why", retry_after_s=2.0, status=status, code=code), 0.0
    )
    assert actions == [Fail(status, code, "why", 2.0)]
    assert state.finished
