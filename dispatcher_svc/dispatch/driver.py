"""The thin driver of the dispatch state machine (docs/architecture.md).

Every attempt is a task that turns its provider's link events into machine events on one
inbox; timers are loop callbacks that put their `Timer` there; reserves are tasks that put
`Reserved`/`NoProvider`. The loop takes everything ready at once, steps the pure machine,
and executes the actions it returns (each as `actions` documents) -- nothing else decides
anything here. What it talks to comes in as `ports`, so tests can fake each one.

It also watches what providers do, since what they say may be false: each attempt's times
go with its Release as a speed sample (`speed.measure`, C5); an `Accepted` is checked
against the provider session's cold-load memory (`speed.ColdLoads`, B6); a chunk larger
than one `Dispatches` message (`max_chunk_bytes`) fails its own attempt as a 502, so no
provider can make a message the stream shared by other requests cannot carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from typing import Any, assert_never

from contract import dispatcher_pb2
from contract import hedgerow_common_pb2 as common_pb2
from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.dispatch import machine
from dispatcher_svc.dispatch.actions import (
    CANCELLED,
    AbortReserve,
    Action,
    Cancel,
    ClearTimer,
    Commit,
    Fail,
    Finish,
    InBandError,
    Relay,
    Release,
    Reserve,
    Send,
    SetTimer,
)
from dispatcher_svc.dispatch.attempt import Watch, pump
from dispatcher_svc.dispatch.events import (
    ClientGone,
    Disconnected,
    Event,
    NoProvider,
    Reserved,
    Shutdown,
    Timer,
)
from dispatcher_svc.dispatch.metrics import DispatchMetrics
from dispatcher_svc.dispatch.ports import Clock, LinkAttempt, Links, SlotRegistry
from dispatcher_svc.dispatch.speed import AttemptClock, ColdLoads, measure
from dispatcher_svc.dispatch.state import DispatchSettings, DispatchState
from dispatcher_svc.registry_client import NoReservation, Speed

__all__ = ["DispatchRun", "Dispatcher", "settings_from"]

log = logging.getLogger(__name__)
RETRY_RESERVE_TIMEOUT_S = 5.0
DEFAULT_MAX_CHUNK_BYTES = 1024 * 1024


def settings_from(config: DispatcherConfig) -> DispatchSettings:
    return DispatchSettings(
        max_dispatch_attempts=config.max_dispatch_attempts,
        ttft_base_s=config.ttft_base_s,
        ttft_per_token_s=config.ttft_per_token_s,
        speculative_ratio=config.speculative_ratio,
        preamble_content_timeout_s=config.preamble_content_timeout_s,
        inference_timeout_s=config.inference_timeout_s,
        max_held_preamble=config.max_held_preamble,
    )


# ---- one request ----------------------------------------------------------------------


@dataclass
class _Live:
    """Driver-side bookkeeping of one attempt (the machine keeps the decisions)."""

    reservation_id: str = ""
    provider: str = ""
    version: str = ""
    queued_s: float = 0.0
    reserve_s: float = 0.0  # the Reserve call, queue wait included
    times: AttemptClock = field(default_factory=AttemptClock)
    link: LinkAttempt | None = None
    reader: asyncio.Task[None] | None = None
    reserver: asyncio.Task[None] | None = None
    backup: bool = False


@dataclass(eq=False)
class DispatchRun:
    """Drives one request. Iterate `run()` for the gateway's events; cancel-safe.

    `cold_loads` is shared by every run of a dispatcher (None: this run's own);
    `max_chunk_bytes` the largest chunk an attempt may send (a larger one fails it, 502)."""

    request: dispatcher_pb2.DispatchRequest
    settings: DispatchSettings
    links: Links
    registry: SlotRegistry
    metrics: DispatchMetrics
    queue_wait_s: float
    clock: Clock = time.monotonic
    cold_loads: ColdLoads | None = None
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    inbox: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    _attempts: dict[int, _Live] = field(default_factory=dict)
    _timers: dict[Timer, asyncio.TimerHandle] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    _started: float = 0.0
    _watch: Watch = field(init=False)

    def __post_init__(self) -> None:
        cold_loads = self.cold_loads or ColdLoads(self.settings.inference_timeout_s)
        self._watch = Watch(self.request.model, self.max_chunk_bytes, cold_loads, self.clock)

    async def run(self) -> AsyncGenerator[list[dispatcher_pb2.DispatchEvent], None]:
        """Yields the gateway's events, one list per machine step (never empty)."""
        self._started = self.clock()
        state, actions = machine.start(self.settings, self.request.prompt_tokens)
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
                state, actions = machine.step_all(state, events, self.clock())
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

    async def _abandon(self, state: DispatchState) -> None:
        state, actions = machine.step(state, ClientGone(), self.clock())
        self._execute(actions)
        while not state.finished:
            # Only the answers owed to reserves matter now: they release what they got.
            event = await self.inbox.get()
            if isinstance(event, Reserved | NoProvider):
                state, actions = machine.step(state, event, self.clock())
                self._execute(actions)

    # --- actions --------------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> list[dispatcher_pb2.DispatchEvent]:
        """Do `actions` in order; returns what they tell the gateway."""
        out: list[dispatcher_pb2.DispatchEvent] = []
        for action in actions:
            match action:
                case Relay():  # the hot path: first
                    out.append(_chunks(action.chunks))
                case Reserve():
                    self._reserve(action)
                case AbortReserve():
                    live = self._attempts.get(action.attempt)
                    if live is not None and live.reserver is not None:
                        live.reserver.cancel()
                case Send():
                    self._send(action.attempt)
                case Cancel():
                    self._cancel(action.attempt)
                case Release():
                    self._release(action)
                case SetTimer():
                    delay = max(0.0, action.timer.at - self.clock())
                    self._timers[action.timer] = asyncio.get_running_loop().call_later(
                        delay, self._fire, action.timer
                    )
                case ClearTimer():
                    handle = self._timers.pop(action.timer, None)
                    if handle is not None:
                        handle.cancel()
                case Commit():
                    out.extend(self._commit(action))
                case Finish():
                    self.metrics.requests.labels("success").inc()
                    usage = common_pb2.Usage(
                        prompt_tokens=action.usage.prompt_tokens,
                        completion_tokens=action.usage.completion_tokens,
                        total_tokens=action.usage.total_tokens,
                    )
                    completed = dispatcher_pb2.Completed(usage=usage)
                    out.append(dispatcher_pb2.DispatchEvent(completed=completed))
                case InBandError():
                    self.metrics.in_band_errors.inc()
                    self.metrics.requests.labels("in_band_error").inc()
                    out.append(dispatcher_pb2.DispatchEvent(stream_error=action.failure.to_proto()))
                case Fail():
                    self.metrics.requests.labels("failed").inc()
                    out.append(dispatcher_pb2.DispatchEvent(failed=action.failure.to_proto()))
                case _:
                    assert_never(action)
        return out

    def _fire(self, timer: Timer) -> None:
        self._timers.pop(timer, None)
        self.inbox.put_nowait(timer)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _reserve(self, action: Reserve) -> None:
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
                self.inbox.put_nowait(NoProvider(action.attempt, message="reserve aborted"))
                self._spawn(self._release_task(token, CANCELLED))

        task.add_done_callback(aborted)

    async def _reserve_task(self, action: Reserve, live: _Live, token: str) -> None:
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
                NoProvider(
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
            Reserved(action.attempt, reservation.provider_id, reservation.provider_version)
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
        live.times.sent_at = self.clock()
        self.metrics.dispatches.labels("sent").inc()
        self._log("attempt sent", attempt_id, live, version=live.version, backup=live.backup)
        live.reader = self._spawn(self._attempt_task(attempt_id, live))

    async def _attempt_task(self, attempt_id: int, live: _Live) -> None:
        session = self.links.get(live.provider)
        if session is None:
            self.inbox.put_nowait(Disconnected(attempt_id))
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
        if await pump(link, session, attempt_id, self.inbox.put_nowait, live.times, self._watch):
            session.finish(link_id)

    def _cancel(self, attempt_id: int) -> None:
        live = self._attempts.get(attempt_id)
        if live is None:
            return
        self._log("attempt cancelled", attempt_id, live)
        if live.reader is not None:
            live.reader.cancel()
        if live.link is not None:
            self._spawn(live.link.cancel())

    def _release(self, action: Release) -> None:
        live = self._attempts.get(action.attempt)
        if live is None or not live.reservation_id:
            return
        self.metrics.dispatches.labels(action.outcome.value).inc()
        speed = measure(live.times, action, self._deadline_s)
        self._log(
            "attempt released",
            action.attempt,
            live,
            status=action.status_code,
            ttft_s=None if speed is None else speed.ttft_s,
            slow=action.slow,
        )
        self._spawn(self._release_task(live.reservation_id, action.status_code, speed))

    async def _release_task(
        self, reservation_id: str, status: int, speed: Speed | None = None
    ) -> None:
        if await self.registry.release(reservation_id, status, speed):
            self.metrics.cooldowns.inc()

    @property
    def _deadline_s(self) -> float:
        return self.settings.ttft_deadline_s(self.request.prompt_tokens)

    def _commit(self, action: Commit) -> list[dispatcher_pb2.DispatchEvent]:
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
                dispatch_us=int((live.times.sent_at - self._started) * 1e6),
                provider_us=int((now - live.times.sent_at) * 1e6),
            )
        )
        return [committed, _chunks(action.chunks)] if action.chunks else [committed]


def _chunks(chunks: tuple[bytes, ...]) -> dispatcher_pb2.DispatchEvent:
    return dispatcher_pb2.DispatchEvent(chunks=dispatcher_pb2.Chunks(chunks=chunks))


# ---- every request --------------------------------------------------------------------


class Dispatcher:
    """Creates a `DispatchRun` per request; stopping it ends every run (B12)."""

    def __init__(
        self,
        config: DispatcherConfig,
        links: Links,
        registry: SlotRegistry,
        metrics: DispatchMetrics,
    ) -> None:
        self._config = config
        self._settings = settings_from(config)
        self._links = links
        self._registry = registry
        self._metrics = metrics
        self._cold_loads = ColdLoads(config.inference_timeout_s)  # B6, across requests
        self.max_message_bytes = config.dispatch_message_bytes
        """The budget of one `Dispatches` message (the servicer splits by it)."""
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
            cold_loads=self._cold_loads,
            max_chunk_bytes=self.max_message_bytes,
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
            run.inbox.put_nowait(Shutdown())
        if self._runs:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_s)
