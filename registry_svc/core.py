"""The registry facade the gRPC servicer wraps: provider table, admission (A6/A7),
reservation with slots and the wait queue (C5, C6), release into the breaker (C4), explain
(C7), model list and stats.

Every decision goes through ``eligibility.gate``. All methods except ``reserve`` are
synchronous and run to completion without yielding, so on one event loop a check and the
slot it takes cannot interleave with another request's (no oversubscription without
locks). Time comes from the injected monotonic ``clock``, randomness from ``rng``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from registry_svc.breaker import Breaker
from registry_svc.eligibility import (
    Availability,
    GateRequest,
    Reason,
    ReasonCode,
    classify,
    eligible_now,
    gate,
)
from registry_svc.errors import (
    ModelTooLarge,
    NoCapableProvider,
    NoEligibleProvider,
    ProvidersBusy,
    QueueFull,
    QueueTimeout,
    RegistryError,
    UnknownModel,
)
from registry_svc.model import ModelLoad, Outcome, Provider, RegistrySettings, Shape, Traits
from registry_svc.queue import Waiter, WaitQueue
from registry_svc.scheduler import CostModel, Ranked, pick
from registry_svc.store import InMemoryStore, ProviderStore, ReservationRecord
from registry_svc.versions import Version


@dataclass(frozen=True, slots=True)
class Reservation:
    """A slot held on ``provider_id`` for ``model_id``; release it exactly once."""

    id: str
    provider_id: str
    provider_version: str
    model_id: str
    shape: Shape
    queued_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """``released``: this call freed the slot (False for an unknown or repeated id);
    ``cooldown_entered``: the outcome put (provider, model, shape) into cooldown."""

    released: bool
    cooldown_entered: bool = False


class AdmitKind(StrEnum):
    """Admission ladder rungs (A6/A7)."""

    OK = "ok"
    QUEUE = "queue"
    UNKNOWN_MODEL = "unknown_model"
    NO_CAPABLE_PROVIDER = "no_capable_provider"
    UNAVAILABLE = "unavailable"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class AdmitVerdict:
    """Admit's answer. ``error`` is set for every refusal and carries status, code, message
    and retry-after; ``reconnecting`` marks a QUEUE caused only by reconnecting providers."""

    kind: AdmitKind
    error: RegistryError | None = None
    reconnecting: bool = False

    @property
    def http_status(self) -> int:
        return 200 if self.error is None else self.error.http_status

    @property
    def code(self) -> str:
        return "" if self.error is None else self.error.code

    @property
    def message(self) -> str:
        return "" if self.error is None else self.error.message

    @property
    def retry_after_s(self) -> int | None:
        return None if self.error is None else self.error.retry_after_s


@dataclass(frozen=True, slots=True)
class ProviderVerdict:
    """One Explain row (C7)."""

    provider_id: str
    serial: str
    version: str
    eligible: bool
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class RegistryStats:
    """Counters and gauges for metrics."""

    providers_total: int
    providers_online: int
    slots_in_use: int
    reservations_open: int
    queue_depth: Mapping[str, int]
    cooldowns_entered: int
    cooldowns_active: int
    admissions: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class _Ask:
    """A reservation request, as kept by a queued waiter."""

    model_id: str
    traits: Traits
    exclude: frozenset[str]
    allowlist: frozenset[str] | None
    avoid_version: str | None
    prompt_tokens: int
    max_tokens: int
    reservation_id: str | None = None  # chosen by the caller, so it can release after a cancel


_QUEUEABLE = (Availability.AT_CAPACITY, Availability.RECONNECTING)
# How a refused first Reserve counts in the admissions metric (the A6/A7 rung it hit).
_ADMISSION_KIND: dict[type[RegistryError], AdmitKind] = {
    UnknownModel: AdmitKind.UNKNOWN_MODEL,
    NoCapableProvider: AdmitKind.NO_CAPABLE_PROVIDER,
    NoEligibleProvider: AdmitKind.UNAVAILABLE,
    ModelTooLarge: AdmitKind.TOO_LARGE,
    ProvidersBusy: AdmitKind.RATE_LIMITED,
    QueueFull: AdmitKind.RATE_LIMITED,
    QueueTimeout: AdmitKind.RATE_LIMITED,
}


class Registry:
    """Who may serve a request, and the slots they hold. See the module docstring."""

    def __init__(
        self,
        settings: RegistrySettings,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        store: ProviderStore | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._rng = rng
        self._store: ProviderStore = InMemoryStore() if store is None else store
        self._breaker = Breaker.from_settings(settings) if breaker is None else breaker
        self._floor = Version(settings.tools_version_floor)
        self._cost = CostModel(settings)
        self._queue: WaitQueue[_Ask, Reservation] = WaitQueue(max_depth=settings.queue_max_depth)
        self._registrations = itertools.count(1)
        self._admissions: Counter[str] = Counter()
        self._released_early: dict[str, float] = {}  # reservation id -> when released

    # ------------------------------------------------------------------ provider table

    def upsert_provider(self, provider: Provider) -> Provider:
        """Register or re-register ``provider`` and return the stored record.

        The registry stamps ``last_seen`` and a fresh ``registration``. A re-registration of
        the same id starts clean: its strikes and cooldowns are forgotten, and outcomes of
        reservations taken under an earlier registration no longer feed the breaker. Queued
        waiters the provider can serve are granted; waiters only the old record could serve
        are failed at once.
        """
        record = replace(provider, last_seen=self._clock(), registration=next(self._registrations))
        previous = self._store.put(record)
        self._breaker.clear_provider(record.id)
        for model_id in record.models:
            self._drain(model_id)
        if previous is not None:
            self._fail_stranded(previous)
        return record

    def remove_provider(self, provider_id: str) -> bool:
        """The provider's session ended: it stops being routable at once.

        Its record is kept as offline so Admit can queue for it while it may reconnect
        (A7, for ``reconnect_grace_s``; ``sweep`` drops it later). Open reservations stay
        until released. Waiters only it could serve fail at once (C6). False if unknown or
        already offline.
        """
        previous = self._store.get(provider_id)
        if previous is None or not previous.online:
            return False
        self._store.put(replace(previous, online=False, last_seen=self._clock()))
        self._fail_stranded(previous)
        return True

    mark_offline = remove_provider

    def set_trusted(self, provider_id: str, trusted: bool) -> bool:
        """Record a challenge verdict (F1): untrusted providers are not routable.

        Becoming trusted drains the queue; losing trust fails waiters only it could serve.
        False if the provider is unknown.
        """
        previous = self._store.get(provider_id)
        if previous is None:
            return False
        if previous.trusted == trusted:
            return True
        self._store.put(replace(previous, trusted=trusted))
        if trusted:
            for model_id in previous.models:
                self._drain(model_id)
        else:
            self._fail_stranded(previous)
        return True

    def update_load(
        self,
        provider_id: str,
        loads: Mapping[str, ModelLoad],
        limits: Mapping[str, int] | None = None,
    ) -> bool:
        """Heartbeat: replace the provider's per-model loads and refresh ``last_seen``;
        ``limits`` carries changed per-model concurrency limits (more room serves the
        queue at once).

        Models missing from ``loads`` count as idle. Does not bring an offline provider
        back (only ``upsert_provider`` does). False if the provider is unknown.
        """
        previous = self._store.get(provider_id)
        if previous is None:
            return False
        now = self._clock()
        models = previous.models
        changed = {
            m: n
            for m, n in (limits or {}).items()
            if m in models and n > 0 and models[m].max_concurrency != n
        }
        if changed:
            models = {
                m: replace(info, max_concurrency=changed[m]) if m in changed else info
                for m, info in models.items()
            }
        self._store.put(replace(previous, models=models, loads=dict(loads), last_seen=now))
        for model_id in changed:
            self._drain(model_id)
        if previous.online and now - previous.last_seen > self.settings.heartbeat_timeout_s:
            # It was silent long enough to be gated as offline; it is routable again.
            for model_id in previous.models:
                self._drain(model_id)
        return True

    def sweep(self) -> None:
        """Periodic housekeeping (call about once per heartbeat interval).

        Fails waiters past their deadline (QueueTimeout) and waiters only silent providers
        could serve (a provider silent for ``heartbeat_timeout_s`` is gated as offline until
        its next heartbeat), forgets providers not seen for ``reconnect_grace_s``, serves
        waiters a lapsed cooldown lets through, and sweeps stale breaker entries.
        """
        now = self._clock()
        for waiter in self._queue.expired(now):
            self._queue.remove(waiter)  # before the retry-after, which counts the queue
            self._queue.fail(waiter, self._timeout_error(waiter.model_id))
        for provider in list(self._store.providers()):
            silent_s = now - provider.last_seen
            gone = silent_s > self.settings.reconnect_grace_s
            if gone:
                self._store.delete(provider.id)
            if gone or (provider.online and silent_s > self.settings.heartbeat_timeout_s):
                self._fail_stranded(provider)
        # Slots can become usable without a release or registration (a cooldown ran out).
        for model_id in self._queue.models():
            self._drain(model_id)
        self._breaker.sweep(now)
        horizon = now - self.settings.released_early_ttl_s
        for rid, at in list(self._released_early.items()):
            if at >= horizon:
                break  # insertion order is time order
            del self._released_early[rid]

    # ------------------------------------------------------------------ queries

    def admit(
        self,
        model_id: str,
        traits: Traits = Traits(),
        allowlist: Collection[str] | None = None,
        prompt_tokens: int = 0,
        max_tokens: int | None = None,
    ) -> AdmitVerdict:
        """Preflight a request (A6/A7 ladder); takes no slot.

        unknown model -> UNKNOWN_MODEL (404); no online provider passes the tools/vision
        gates -> NO_CAPABLE_PROVIDER (503, never queued); someone eligible -> OK; capable
        providers merely full, or only reconnecting ones -> QUEUE, or RATE_LIMITED (429 +
        retry-after) when the model's queue is full; only too-large -> TOO_LARGE (503);
        otherwise UNAVAILABLE (503 + retry-after). Cooling (provider, model, shape) keys do
        not count as capacity.
        """
        ask = self._ask(model_id, traits, (), allowlist, None, prompt_tokens, max_tokens)
        verdict = self._admit(ask)
        self._admissions[verdict.kind.value] += 1
        return verdict

    def explain(
        self,
        model_id: str,
        traits: Traits = Traits(),
        allowlist: Collection[str] | None = None,
        prompt_tokens: int = 0,
        max_tokens: int | None = None,
    ) -> list[ProviderVerdict]:
        """Every provider's verdict and every reason (C7); eligible first, then by id."""
        ask = self._ask(model_id, traits, (), allowlist, None, prompt_tokens, max_tokens)
        now = self._clock()
        rows = [
            ProviderVerdict(p.id, p.serial, p.version, not reasons, tuple(reasons))
            for p, reasons in self._verdicts(ask, self._store.providers(), now)
        ]
        rows.sort(key=lambda row: (not row.eligible, row.provider_id))
        return rows

    def list_models(self) -> list[str]:
        """Sorted ids of models some online, trusted, non-silent provider serves."""
        now = self._clock()
        limit = self.settings.heartbeat_timeout_s
        models: set[str] = set()
        for p in self._store.providers():
            if p.online and p.trusted and now - p.last_seen <= limit:
                models.update(p.models)
        return sorted(models)

    def online_provider_ids(self) -> list[str]:
        """Sorted ids of online, trusted, non-silent providers (what operators and the
        launcher wait on)."""
        now = self._clock()
        limit = self.settings.heartbeat_timeout_s
        return sorted(
            p.id
            for p in self._store.providers()
            if p.online and p.trusted and now - p.last_seen <= limit
        )

    def queue_depth(self, model_id: str) -> int:
        """Waiters queued for ``model_id``."""
        return self._queue.depth(model_id)

    def retry_after_s(self, model_id: str) -> int:
        """Retry-After for a refusal: 2 s with an empty queue, else depth x 3 in 2..30 s."""
        s = self.settings
        depth = self._queue.depth(model_id)
        if depth == 0:
            return s.retry_after_empty_s
        wait = depth * s.retry_after_per_waiter_s
        return max(s.retry_after_min_s, min(s.retry_after_max_s, wait))

    def stats(self) -> RegistryStats:
        """A snapshot of counts for metrics (O(providers + breaker entries))."""
        now = self._clock()
        providers = self._store.providers()
        limit = self.settings.heartbeat_timeout_s
        return RegistryStats(
            providers_total=len(providers),
            providers_online=sum(1 for p in providers if p.online and now - p.last_seen <= limit),
            slots_in_use=self._store.slots_in_use(),
            reservations_open=self._store.reservation_count(),
            queue_depth=self._queue.depths(),
            cooldowns_entered=self._breaker.cooldowns_entered,
            cooldowns_active=self._breaker.active_cooldowns(now),
            admissions=dict(self._admissions),
        )

    # ------------------------------------------------------------------ reserve / release

    async def reserve(
        self,
        model_id: str,
        traits: Traits = Traits(),
        *,
        exclude: Collection[str] = (),
        avoid_version: str | None = None,
        allowlist: Collection[str] | None = None,
        prompt_tokens: int = 0,
        max_tokens: int | None = None,
        may_queue: bool = True,
        timeout_s: float | None = None,
        reservation_id: str | None = None,
    ) -> Reservation:
        """Select a provider (C5) and take a slot, waiting in the model's queue if allowed.

        ``exclude``: provider ids not to use; ``allowlist``: provider serials allowed (empty
        or None = any); ``avoid_version``: soft preference for another binary version.
        Waits at most ``min(timeout_s, queue_wait_s)`` and only when ``may_queue`` (retries
        never queue). Raises UnknownModel, NoCapableProvider, NoEligibleProvider,
        ModelTooLarge, ProvidersBusy (full and may not queue), QueueFull or QueueTimeout.
        Cancel-safe: a cancelled or timed-out wait leaves no waiter and no slot behind.
        ``reservation_id`` (optional, unique per call) names the reservation: a caller that
        cancels its call may not see the reply, so it releases by that id instead; an id
        released before it was granted is never granted (B12).
        """
        ask = self._ask(
            model_id,
            traits,
            exclude,
            allowlist,
            avoid_version,
            prompt_tokens,
            max_tokens,
            reservation_id,
        )
        try:
            reservation = await self._reserve(ask, may_queue=may_queue, timeout_s=timeout_s)
        except RegistryError as err:
            if may_queue:  # a request's first Reserve is its admission (retries never queue)
                self._admissions[_ADMISSION_KIND.get(type(err), AdmitKind.UNAVAILABLE).value] += 1
            raise
        if may_queue:
            kind = AdmitKind.QUEUE if reservation.queued_s > 0 else AdmitKind.OK
            self._admissions[kind.value] += 1
        return reservation

    def reserve_now(
        self,
        model_id: str,
        traits: Traits = Traits(),
        *,
        exclude: Collection[str] = (),
        avoid_version: str | None = None,
        allowlist: Collection[str] | None = None,
        prompt_tokens: int = 0,
        max_tokens: int | None = None,
        may_queue: bool = True,
        reservation_id: str | None = None,
    ) -> Reservation | None:
        """What `reserve` does when a provider has a free slot now, without a coroutine:
        the reservation, or None with nothing changed (then `reserve` decides: refuse or
        wait in the queue). For callers that answer many reserves on one stream."""
        ask = self._ask(
            model_id,
            traits,
            exclude,
            allowlist,
            avoid_version,
            prompt_tokens,
            max_tokens,
            reservation_id,
        )
        now = self._clock()
        granted = self._try_reserve(ask, now, enqueued_at=now)
        if granted is not None and may_queue:  # a request's first Reserve is its admission
            self._admissions[AdmitKind.OK.value] += 1
        return granted

    async def _reserve(self, ask: _Ask, *, may_queue: bool, timeout_s: float | None) -> Reservation:
        model_id, traits = ask.model_id, ask.traits
        now = self._clock()
        granted = self._try_reserve(ask, now, enqueued_at=now)
        if granted is not None:
            return granted
        serving = self._store.serving(model_id)
        if not self._known(serving, now):
            raise UnknownModel(f"model {model_id!r} is not served by any provider")
        availability = classify(
            self._verdicts(ask, serving, now),
            traits,
            now=now,
            reconnect_grace_s=self.settings.reconnect_grace_s,
        )
        if availability is Availability.ELIGIBLE:
            # Only reachable when a shared store lost the slot race; wait like a full fleet.
            availability = Availability.AT_CAPACITY
        if availability not in _QUEUEABLE:
            raise self._refusal(availability, ask)
        if not may_queue:
            if availability is Availability.AT_CAPACITY:
                raise ProvidersBusy(
                    f"every provider for {model_id!r} is at capacity",
                    retry_after_s=self.retry_after_s(model_id),
                )
            raise self._refusal(Availability.NONE, ask)
        wait_s = self.settings.queue_wait_s
        if timeout_s is not None:
            wait_s = max(0.0, min(wait_s, timeout_s))
        waiter = self._queue.push(model_id, ask, now=now, wait_s=wait_s)
        if waiter is None:
            raise QueueFull(
                f"every provider for {model_id!r} is at capacity and the queue is full",
                retry_after_s=self.retry_after_s(model_id),
            )
        try:
            async with asyncio.timeout(wait_s):
                return await waiter.future
        except TimeoutError:
            self._abandon(waiter)
            raise self._timeout_error(model_id) from None
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    def select(
        self,
        model_id: str,
        traits: Traits = Traits(),
        *,
        exclude: Collection[str] = (),
        avoid_version: str | None = None,
        allowlist: Collection[str] | None = None,
        prompt_tokens: int = 0,
        max_tokens: int | None = None,
    ) -> Provider | None:
        """The provider ``reserve`` would pick now, without taking a slot (None if nobody
        is eligible). For benchmarks and dry runs: the pure selection cost. Draws the rng."""
        ask = self._ask(
            model_id, traits, exclude, allowlist, avoid_version, prompt_tokens, max_tokens
        )
        return pick(
            self._candidates(ask, self._clock()),
            self._rng,
            near_tie_window_s=self.settings.near_tie_window_s,
            avoid_version=ask.avoid_version,
        )

    def release(self, reservation_id: str, outcome: Outcome) -> ReleaseResult:
        """Free the reservation's slot exactly once and feed the breaker (C4, B12).

        A second release of the same id (or an unknown id) changes nothing and returns
        ``released=False``. Status 200 is a success, 0 a neutral cancel; other codes are
        errors the breaker counts if they are counted codes. Outcomes of reservations from
        an earlier registration of the provider are not fed. The freed slot goes to the
        oldest queued waiter that can use it.
        """
        record = self._store.pop_reservation(reservation_id)
        if record is None:
            if reservation_id:
                # Maybe released before its grant (a cancelled Reserve): remember it briefly.
                self._released_early[reservation_id] = self._clock()
                if len(self._released_early) > self.settings.released_early_max:
                    del self._released_early[next(iter(self._released_early))]
            return ReleaseResult(released=False)
        self._store.release_slot(record.provider_id, record.model_id)
        entered = False
        if outcome.status_code != Outcome.CANCELLED:
            provider = self._store.get(record.provider_id)
            if provider is not None and provider.registration == record.registration:
                shape = record.shape if outcome.shape is None else outcome.shape
                entered = self._breaker.record(
                    record.provider_id, record.model_id, shape, outcome.status_code, self._clock()
                )
        self._drain(record.model_id, max_grants=1)
        return ReleaseResult(released=True, cooldown_entered=entered)

    # ------------------------------------------------------------------ internals

    def _ask(
        self,
        model_id: str,
        traits: Traits,
        exclude: Collection[str],
        allowlist: Collection[str] | None,
        avoid_version: str | None,
        prompt_tokens: int,
        max_tokens: int | None,
        reservation_id: str | None = None,
    ) -> _Ask:
        return _Ask(
            reservation_id=reservation_id or None,
            model_id=model_id,
            traits=traits,
            exclude=frozenset(exclude),
            # An empty allowlist (an unset repeated field on the wire) means no allowlist.
            allowlist=frozenset(allowlist) if allowlist else None,
            avoid_version=avoid_version or None,
            prompt_tokens=max(0, prompt_tokens),
            max_tokens=self.settings.default_max_tokens
            if max_tokens is None or max_tokens <= 0
            else max_tokens,
        )

    def _gate_request(self, ask: _Ask, now: float, *, check_silence: bool = True) -> GateRequest:
        return GateRequest(
            model_id=ask.model_id,
            traits=ask.traits,
            now=now,
            tools_floor=self._floor,
            exclude=ask.exclude,
            allowlist=ask.allowlist,
            request_tokens=ask.prompt_tokens + ask.max_tokens,
            stale_after_s=self.settings.heartbeat_timeout_s if check_silence else None,
        )

    def _verdicts(
        self, ask: _Ask, providers: Iterable[Provider], now: float
    ) -> list[tuple[Provider, list[Reason]]]:
        req = self._gate_request(ask, now)
        model_id, shape = ask.model_id, ask.traits.shape
        in_use, cooling = self._store.in_use, self._breaker.cooling_until
        return [
            (
                p,
                gate(
                    p,
                    req,
                    in_use=in_use(p.id, model_id),
                    cooling_until=cooling(p.id, model_id, shape, now),
                ),
            )
            for p in providers
        ]

    def _known(self, serving: Collection[Provider], now: float) -> bool:
        grace = self.settings.reconnect_grace_s
        return any(p.online or now - p.last_seen <= grace for p in serving)

    def _candidates(self, ask: _Ask, now: float) -> list[Ranked]:
        """Every provider eligible now with its C5 cost (the selection hot path)."""
        model_id = ask.model_id
        eligible = eligible_now(
            self._store.serving(model_id),
            self._gate_request(ask, now),
            slots=self._store.slots_for_model(model_id),
            cooling=self._breaker.cooling(model_id, ask.traits.shape, now),
        )
        return self._cost.rank(eligible, model_id, ask.prompt_tokens, ask.max_tokens)

    def _try_reserve(self, ask: _Ask, now: float, *, enqueued_at: float) -> Reservation | None:
        """Pick among providers eligible now and take a slot; None if nobody is."""
        if ask.reservation_id is not None and ask.reservation_id in self._released_early:
            return None  # its caller gave up and released it already: never grant it
        model_id, shape = ask.model_id, ask.traits.shape
        provider = pick(
            self._candidates(ask, now),
            self._rng,
            near_tie_window_s=self.settings.near_tie_window_s,
            avoid_version=ask.avoid_version,
        )
        if provider is None:
            return None
        limit = provider.models[model_id].max_concurrency
        if not self._store.try_acquire(provider.id, model_id, limit):
            return None
        chosen = ask.reservation_id
        while True:
            record = ReservationRecord(
                id=chosen or f"{self._rng.getrandbits(96):024x}",
                provider_id=provider.id,
                model_id=model_id,
                shape=shape,
                version=provider.version,
                registration=provider.registration,
                created_at=now,
            )
            if self._store.add_reservation(record):
                break
            chosen = None  # a caller reused an id: fall back to a fresh one
        return Reservation(
            id=record.id,
            provider_id=provider.id,
            provider_version=provider.version,
            model_id=model_id,
            shape=shape,
            queued_s=max(0.0, now - enqueued_at),
        )

    def _drain(self, model_id: str, *, max_grants: int | None = None) -> None:
        """Serve the model's waiters oldest first while providers can take them (C6)."""
        granted = 0
        for waiter in self._queue.waiting(model_id):
            if max_grants is not None and granted >= max_grants:
                return
            reservation = self._try_reserve(
                waiter.request, self._clock(), enqueued_at=waiter.enqueued_at
            )
            if reservation is None:
                continue
            if self._queue.grant(waiter, reservation):
                granted += 1
            else:
                self.release(reservation.id, Outcome(Outcome.CANCELLED))

    def _fail_stranded(self, previous: Provider) -> None:
        """``previous`` (the record before a change) may no longer serve anyone: fail each
        waiter it could have served that no online provider can serve any more (C6)."""
        now = self._clock()
        for model_id in previous.models:
            waiters = self._queue.waiting(model_id)
            if not waiters:
                continue
            self._drain(model_id)
            for waiter in self._queue.waiting(model_id):
                ask = waiter.request
                # Ignore silence: a provider being declared silent was serving until now.
                could = gate(
                    previous,
                    self._gate_request(ask, now, check_silence=False),
                    in_use=0,
                    cooling_until=None,
                )
                if any(r.code is not ReasonCode.AT_CAPACITY for r in could):
                    continue
                availability = classify(
                    self._verdicts(ask, self._store.serving(model_id), now),
                    ask.traits,
                    now=now,
                    reconnect_grace_s=self.settings.reconnect_grace_s,
                )
                if availability is not Availability.AT_CAPACITY:
                    if availability is Availability.RECONNECTING:
                        availability = Availability.NONE
                    self._queue.fail(waiter, self._refusal(availability, ask))

    def _abandon(self, waiter: Waiter[_Ask, Reservation]) -> None:
        """Undo a wait that ended without its result being used."""
        self._queue.remove(waiter)
        future = waiter.future
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            if future.exception() is None:
                # Granted in the same instant the wait ended: give the slot back.
                self.release(future.result().id, Outcome(Outcome.CANCELLED))

    def _timeout_error(self, model_id: str) -> QueueTimeout:
        return QueueTimeout(
            f"every provider for {model_id!r} stayed at capacity for the whole queue wait",
            retry_after_s=self.retry_after_s(model_id),
        )

    def _refusal(self, availability: Availability, ask: _Ask) -> RegistryError:
        model_id = ask.model_id
        if availability is Availability.NO_TOOLS:
            return NoCapableProvider(
                f"tool calls on {model_id!r} need a provider at version >= "
                f"{self._floor.text} with a healthy chat template; none is available",
                capability=Shape.TOOLS,
            )
        if availability is Availability.NO_VISION:
            return NoCapableProvider(
                f"image or video input on {model_id!r} needs a vision provider with a "
                "healthy chat template; none is available",
                capability=Shape.VISION,
            )
        if availability is Availability.TOO_LARGE:
            return ModelTooLarge(
                f"the request ({ask.prompt_tokens + ask.max_tokens} tokens) is larger than "
                f"every provider of {model_id!r} can take"
            )
        return NoEligibleProvider(
            f"no provider can serve {model_id!r} right now",
            retry_after_s=self.retry_after_s(model_id),
        )

    def _admit(self, ask: _Ask) -> AdmitVerdict:
        now = self._clock()
        model_id = ask.model_id
        serving = self._store.serving(model_id)
        if not self._known(serving, now):
            return AdmitVerdict(
                AdmitKind.UNKNOWN_MODEL,
                UnknownModel(f"model {model_id!r} is not served by any provider"),
            )
        availability = classify(
            self._verdicts(ask, serving, now),
            ask.traits,
            now=now,
            reconnect_grace_s=self.settings.reconnect_grace_s,
        )
        if availability is Availability.ELIGIBLE:
            return AdmitVerdict(AdmitKind.OK)
        if availability in _QUEUEABLE:
            reconnecting = availability is Availability.RECONNECTING
            if self._queue.depth(model_id) >= self.settings.queue_max_depth:
                return AdmitVerdict(
                    AdmitKind.RATE_LIMITED,
                    QueueFull(
                        f"every provider for {model_id!r} is at capacity and the queue is full",
                        retry_after_s=self.retry_after_s(model_id),
                    ),
                    reconnecting=reconnecting,
                )
            return AdmitVerdict(AdmitKind.QUEUE, reconnecting=reconnecting)
        kind = {
            Availability.NO_TOOLS: AdmitKind.NO_CAPABLE_PROVIDER,
            Availability.NO_VISION: AdmitKind.NO_CAPABLE_PROVIDER,
            Availability.TOO_LARGE: AdmitKind.TOO_LARGE,
        }.get(availability, AdmitKind.UNAVAILABLE)
        return AdmitVerdict(kind, self._refusal(availability, ask))
