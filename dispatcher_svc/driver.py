"""The thin driver of the dispatch state machine (DESIGN "The dispatch state machine").

Every attempt is a task that turns its provider's link events into machine events on one
inbox; timers are loop callbacks that put their `Timer` there; reserves are tasks that put
`Reserved`/`NoProvider`. The loop takes everything ready at once, steps the pure machine,
and executes the actions it returns -- nothing else decides anything here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from contract import dispatcher_pb2
from contract import hedgerow_common_pb2 as common_pb2
from contract.chunks import is_boilerplate
from dispatcher_svc import machine as m
from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.link import (
    Attempt,
    LinkAccepted,
    LinkChunk,
    LinkComplete,
    LinkError,
    LinkServer,
)
from dispatcher_svc.registry_client import GrpcRegistry, NoReservation

log = logging.getLogger(__name__)
RETRY_RESERVE_TIMEOUT_S = 5.0


class DispatchMetrics:
    # How one released attempt ended (issue 7); `sent` counts every dispatch on the way out.
    OUTCOMES = ("success", "retry_precontent", "timeout", "failure", "cancelled")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dispatches = Counter(
            "dispatcher_dispatches",
            "Provider dispatches by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in self.OUTCOMES:
            self.dispatches.labels(outcome)  # exported at 0 before the first dispatch
        self.requests = Counter(
            "dispatcher_requests", "Requests by final outcome", ["outcome"], registry=registry
        )
        self.speculative = Counter(
            "dispatcher_speculative_dispatches", "Speculative backups sent", registry=registry
        )
        self.speculative_wins = Counter(
            "dispatcher_speculative_wins", "Requests won by the backup", registry=registry
        )
        self.in_band_errors = Counter(
            "dispatcher_in_band_errors", "Errors after commit", registry=registry
        )
        self.cooldowns = Counter(
            "dispatcher_cooldowns_entered", "Breaker cooldowns entered", registry=registry
        )

    @staticmethod
    def outcome(status: int, *, committed: bool, goes_on: bool) -> str:
        """The `dispatches` label of one released attempt.

        `committed`: the attempt had committed (its failure is told in-band, never retried).
        `goes_on`: the request carries on without it (a retry or a racer takes over).
        A stall is `timeout` in any phase; a pre-commit failure that is retried or failed
        over is `retry_precontent`; every other error (the last one, a non-retryable 4xx,
        any post-commit error) is `failure`.
        """
        if status == m.SUCCESS:
            return "success"
        if status == m.CANCELLED:
            return "cancelled"
        if status == 504:
            return "timeout"
        if not committed and goes_on and status not in m.NON_RETRYABLE:
            return "retry_precontent"
        return "failure"


def settings_from(config: DispatcherConfig) -> m.DispatchSettings:
    return m.DispatchSettings(
        max_dispatch_attempts=config.max_dispatch_attempts,
        ttft_base_s=config.ttft_base_s,
        ttft_per_token_s=config.ttft_per_token_s,
        speculative_ratio=config.speculative_ratio,
        preamble_content_timeout_s=config.preamble_content_timeout_s,
        inference_timeout_s=config.inference_timeout_s,
        max_held_preamble=config.max_held_preamble,
    )


@dataclass
class _Live:
    """Driver-side bookkeeping of one attempt (the machine keeps the decisions)."""

    reservation_id: str = ""
    provider: str = ""
    version: str = ""
    queued_s: float = 0.0
    reserve_s: float = 0.0  # the Reserve call, queue wait included
    sent_at: float = 0.0
    link: Attempt | None = None
    reader: asyncio.Task[None] | None = None
    reserver: asyncio.Task[None] | None = None
    backup: bool = False


@dataclass(eq=False)
class DispatchRun:
    """Drives one request. Iterate `run()` for the gateway's events; cancel-safe."""

    request: dispatcher_pb2.DispatchRequest
    settings: m.DispatchSettings
    links: LinkServer
    registry: GrpcRegistry
    metrics: DispatchMetrics
    queue_wait_s: float
    clock: Callable[[], float] = time.monotonic
    inbox: asyncio.Queue[m.Event] = field(default_factory=asyncio.Queue)
    _attempts: dict[int, _Live] = field(default_factory=dict)
    _timers: dict[m.Timer, asyncio.TimerHandle] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _committed: int | None = None
    _started: float = 0.0

    async def run(self) -> AsyncGenerator[list[dispatcher_pb2.DispatchEvent], None]:
        """Yields the gateway's events, one list per machine step (never empty)."""
        self._started = self.clock()
        state, actions = m.start(self.settings, self.request.prompt_tokens)
        try:
            while True:
                out = self._execute(actions)
                if out:
                    yield out
                if state.finished:
                    return
                events = [await self.inbox.get()]
                while not self.inbox.empty():
                    events.append(self.inbox.get_nowait())
                state, actions = m.step_all(state, events, self.clock())
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away (or the servicer was stopped): cancel every live attempt
            # and release every slot exactly once (B12), without emitting anything.
            await asyncio.shield(self._abandon(state))
            raise
        finally:
            for handle in self._timers.values():
                handle.cancel()
            if self._background:
                await asyncio.shield(asyncio.gather(*self._background, return_exceptions=True))

    async def _abandon(self, state: m.DispatchState) -> None:
        state, actions = m.step(state, m.ClientGone(), self.clock())
        list(self._execute(actions))
        while not state.finished:
            event = await self.inbox.get()
            if isinstance(event, m.Reserved | m.NoProvider):
                state, actions = m.step(state, event, self.clock())
                list(self._execute(actions))

    # --- actions --------------------------------------------------------------------

    def _execute(self, actions: list[m.Action]) -> list[dispatcher_pb2.DispatchEvent]:
        out: list[dispatcher_pb2.DispatchEvent] = []
        for action in actions:
            if isinstance(action, m.Relay):
                out.append(
                    dispatcher_pb2.DispatchEvent(chunks=dispatcher_pb2.Chunks(chunks=action.chunks))
                )
            elif isinstance(action, m.Reserve):
                self._reserve(action)
            elif isinstance(action, m.AbortReserve):
                live = self._attempts.get(action.attempt)
                if live is not None and live.reserver is not None:
                    live.reserver.cancel()
            elif isinstance(action, m.Send):
                self._send(action.attempt)
            elif isinstance(action, m.Cancel):
                self._cancel(action.attempt)
            elif isinstance(action, m.Release):
                # The machine already decided whether the request carries on without this
                # attempt: it does unless these same actions fail the request.
                self._release(action, goes_on=not any(isinstance(a, m.Fail) for a in actions))
            elif isinstance(action, m.SetTimer):
                delay = max(0.0, action.timer.at - self.clock())
                self._timers[action.timer] = asyncio.get_running_loop().call_later(
                    delay, self._fire, action.timer
                )
            elif isinstance(action, m.ClearTimer):
                handle = self._timers.pop(action.timer, None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, m.Commit):
                out.extend(self._commit(action))
            elif isinstance(action, m.Finish):
                self.metrics.requests.labels("success").inc()
                usage = common_pb2.Usage(
                    prompt_tokens=action.usage.prompt_tokens,
                    completion_tokens=action.usage.completion_tokens,
                    total_tokens=action.usage.total_tokens,
                )
                out.append(
                    dispatcher_pb2.DispatchEvent(completed=dispatcher_pb2.Completed(usage=usage))
                )
            elif isinstance(action, m.InBandError):
                self.metrics.in_band_errors.inc()
                self.metrics.requests.labels("in_band_error").inc()
                out.append(dispatcher_pb2.DispatchEvent(stream_error=action.failure.to_proto()))
            elif isinstance(action, m.Fail):
                self.metrics.requests.labels("failed").inc()
                out.append(dispatcher_pb2.DispatchEvent(failed=action.failure.to_proto()))
        return out

    def _fire(self, timer: m.Timer) -> None:
        self._timers.pop(timer, None)
        self.inbox.put_nowait(timer)

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _reserve(self, action: m.Reserve) -> None:
        live = self._attempts.setdefault(action.attempt, _Live(backup=action.backup))
        if action.backup:
            self.metrics.speculative.inc()
        # Our own id for the reservation: if the call is cancelled (AbortReserve, client gone)
        # its reply may be lost with the slot in it, so we release by this id (B12).
        token = f"{self.request.request_id}.{action.attempt}.{uuid.uuid4().hex[:12]}"
        task = self._spawn(self._reserve_task(action, live, token))
        live.reserver = task

        def aborted(done: asyncio.Task[None]) -> None:
            # A task cancelled before it even started runs none of its code, so the machine's
            # one answer for this Reserve (and the release by name) must come from here.
            if done.cancelled():
                self.inbox.put_nowait(m.NoProvider(action.attempt, message="reserve aborted"))
                self._spawn(self._release_task(token, m.CANCELLED))

        task.add_done_callback(aborted)

    async def _reserve_task(self, action: m.Reserve, live: _Live, token: str) -> None:
        r = self.request
        asked = self.clock()
        try:
            reservation = await self.registry.reserve(
                model=r.model,
                traits=r.traits,
                exclude=sorted(action.exclude),
                avoid_version=action.avoid_version or "",
                allowlist=r.allowlist,
                prompt_tokens=r.prompt_tokens,
                max_tokens=r.max_tokens,
                may_queue=action.may_queue,
                timeout_s=self.queue_wait_s if action.may_queue else RETRY_RESERVE_TIMEOUT_S,
                reservation_id=token,
            )
        except NoReservation as exc:
            self.inbox.put_nowait(
                m.NoProvider(
                    action.attempt,
                    full=exc.http_status == 429,
                    retry_after_s=exc.retry_after_s or None,
                    message=exc.failure.message,
                    status=exc.http_status,
                    code=exc.failure.code,
                )
            )
            return
        live.reservation_id = reservation.reservation_id
        live.provider = reservation.provider_id
        live.version = reservation.provider_version
        live.queued_s = reservation.queued_s
        live.reserve_s = self.clock() - asked
        self.inbox.put_nowait(
            m.Reserved(action.attempt, reservation.provider_id, reservation.provider_version)
        )

    def _log(self, message: str, attempt_id: int, live: _Live, **fields: object) -> None:
        """One structured line per attempt transition: which provider got what, by request."""
        extra = {
            "request_id": self.request.request_id,
            "attempt": attempt_id,
            "provider": live.provider,
            **fields,
        }
        log.info(message, extra=extra)

    def _send(self, attempt_id: int) -> None:
        live = self._attempts[attempt_id]
        live.sent_at = self.clock()
        self.metrics.dispatches.labels("sent").inc()
        self._log("attempt sent", attempt_id, live, version=live.version, backup=live.backup)
        live.reader = self._spawn(self._attempt_task(attempt_id, live))

    async def _attempt_task(self, attempt_id: int, live: _Live) -> None:
        session = self.links.get(live.provider)
        if session is None:
            self.inbox.put_nowait(m.Disconnected(attempt_id))
            return
        # Unique per attempt whatever the client sent as X-Request-Id: two requests sharing
        # one must never share a link id (their frames would be routed to each other).
        link_id = f"{self.request.request_id}.{attempt_id}.{uuid.uuid4().hex[:8]}"
        try:
            link = await session.start_attempt(
                link_id,
                self.request.body,
                completions=self.request.kind == dispatcher_pb2.REQUEST_KIND_COMPLETIONS,
            )
        except asyncio.CancelledError:
            # Cancelled while the request frame was being written: the provider may have it,
            # so it must hear Cancel too (the session knows the attempt from before the write).
            await asyncio.shield(session.cancel(link_id))
            raise
        live.link = link
        put = self.inbox.put_nowait
        content_seen = False
        while True:
            event = await link.next_event()
            if isinstance(event, LinkChunk):
                # Only chunks up to this attempt's first content need classifying: that one
                # commits the attempt (or it has lost the race), and every later chunk is
                # relayed or dropped as is.
                boilerplate = not content_seen and is_boilerplate(event.payload)
                content_seen = not boilerplate
                put(m.Chunk(attempt_id, event.payload, boilerplate))
                continue
            if isinstance(event, LinkAccepted):
                put(m.Accepted(attempt_id))
                continue
            if isinstance(event, LinkComplete):
                u = event.usage
                put(
                    m.Completed(
                        attempt_id, m.Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
                    )
                )
            elif isinstance(event, LinkError):
                put(m.ProviderError(attempt_id, event.status, event.message))
            else:
                put(m.Disconnected(attempt_id))
            session.finish(link.attempt_id)
            return

    def _cancel(self, attempt_id: int) -> None:
        live = self._attempts.get(attempt_id)
        if live is None:
            return
        self._log("attempt cancelled", attempt_id, live)
        if live.reader is not None:
            live.reader.cancel()
        if live.link is not None:
            self._spawn(live.link.cancel())

    def _release(self, action: m.Release, *, goes_on: bool) -> None:
        live = self._attempts.get(action.attempt)
        if live is None or not live.reservation_id:
            return
        outcome = DispatchMetrics.outcome(
            action.status_code, committed=action.attempt == self._committed, goes_on=goes_on
        )
        self.metrics.dispatches.labels(outcome).inc()
        self._log("attempt released", action.attempt, live, status=action.status_code)
        self._spawn(self._release_task(live.reservation_id, action.status_code))

    async def _release_task(self, reservation_id: str, status: int) -> None:
        if await self.registry.release(reservation_id, status):
            self.metrics.cooldowns.inc()

    def _commit(self, action: m.Commit) -> list[dispatcher_pb2.DispatchEvent]:
        self._committed = action.attempt
        live = self._attempts[action.attempt]
        now = self.clock()
        if action.speculative_win:
            self.metrics.speculative_wins.inc()
        committed = dispatcher_pb2.DispatchEvent(
            committed=dispatcher_pb2.Committed(
                provider_id=action.provider,
                provider_version=action.version,
                attempts=action.dispatches,
                queue_us=int(live.queued_s * 1e6),
                admit_us=int(max(0.0, live.reserve_s - live.queued_s) * 1e6),
                dispatch_us=int((live.sent_at - self._started) * 1e6),
                provider_us=int((now - live.sent_at) * 1e6),
            )
        )
        out = [committed]
        if action.chunks:
            out.append(
                dispatcher_pb2.DispatchEvent(chunks=dispatcher_pb2.Chunks(chunks=action.chunks))
            )
        return out


class Dispatcher:
    """Creates a `DispatchRun` per request; stopping it ends every run (B12)."""

    def __init__(
        self,
        config: DispatcherConfig,
        links: LinkServer,
        registry: GrpcRegistry,
        metrics: DispatchMetrics,
    ) -> None:
        self._config = config
        self._settings = settings_from(config)
        self._links = links
        self._registry = registry
        self._metrics = metrics
        self._runs: set[DispatchRun] = set()
        self._idle = asyncio.Event()

    async def dispatch(
        self, request: dispatcher_pb2.DispatchRequest
    ) -> AsyncGenerator[list[dispatcher_pb2.DispatchEvent], None]:
        run = DispatchRun(
            request,
            self._settings,
            self._links,
            self._registry,
            self._metrics,
            self._config.queue_wait_s,
        )
        self._runs.add(run)
        try:
            async with contextlib.aclosing(run.run()) as batches:
                async for events in batches:
                    yield events
        finally:
            self._runs.discard(run)
            if not self._runs:
                self._idle.set()

    async def shutdown(self, grace_s: float = 5.0) -> None:
        """Tell every run the dispatcher is stopping; wait a little for them to release."""
        for run in self._runs:
            run.inbox.put_nowait(m.Shutdown())
        if self._runs:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_s)
