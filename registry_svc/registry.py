"""The registry facade the gRPC servicer wraps: who may serve a request and the slots they
hold.

Its parts, each in its own module: the provider table (``table``), the one gate
(``eligibility``), the A6/A7 admission ladder (``admission``), slots, queue and release into
the breaker (``reservations``, C4-C6). The facade takes one ``Ask`` per request question,
settles it once (``Ask.settled``) and tells each part what another's change means: a
registration serves the queue, a provider that stops serving fails the waiters nobody else
can serve.

All methods except ``reserve`` are synchronous and run to completion without yielding, so on
one event loop a check and the slot it takes cannot interleave with another request's (no
oversubscription without locks). Time comes from the injected monotonic ``clock``,
randomness from ``rng``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from registry_svc.admission import Admission, Rung, rung_of
from registry_svc.breaker import Breaker
from registry_svc.eligibility import Reason
from registry_svc.errors import RegistryError
from registry_svc.model import Ask, ModelLoad, Outcome, Provider, RegistrySettings
from registry_svc.queue import WaitQueue
from registry_svc.reservations import ReleaseResult, Reservation, Reservations
from registry_svc.speed import SpeedBook
from registry_svc.store import InMemoryStore, ProviderStore
from registry_svc.table import ProviderTable


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

    providers_online: int
    slots_in_use: int
    queue_depth: Mapping[str, int]
    cooldowns_entered: int
    admissions: Mapping[str, int]


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
        store = InMemoryStore() if store is None else store
        self._breaker = Breaker.from_settings(settings) if breaker is None else breaker
        self.speeds = SpeedBook.from_settings(settings)
        """Measured speed per (provider, model), fed by releases (C5)."""
        self._queue: WaitQueue[Ask, Reservation] = WaitQueue(max_depth=settings.queue_max_depth)
        self._table = ProviderTable(settings, clock=clock, store=store)
        self._admission = Admission(
            settings, store=store, breaker=self._breaker, queue_depth=self._queue.depth
        )
        self._reservations = Reservations(
            settings,
            clock=clock,
            rng=rng,
            store=store,
            breaker=self._breaker,
            speeds=self.speeds,
            admission=self._admission,
            queue=self._queue,
        )
        self._store = store
        self._admissions: Counter[Rung] = Counter()

    # ------------------------------------------------------------------ provider table

    def upsert_provider(self, provider: Provider, *, session: str = "") -> Provider:
        """Register, re-register or update ``provider`` and return the stored record.

        ``session`` names the link session upserting it. The same non-empty session as the
        stored record's is an update of that registration (a ModelsUpdate): its breaker
        state, measured speed and registration stay, and it cannot restore trust. Anything
        else is a registration: the registry stamps a fresh ``registration``, and a
        re-registration of the same id starts clean (C4): its strikes, cooldowns and
        measured speed are forgotten, and outcomes of reservations taken under an earlier
        registration no longer feed them. Either way ``last_seen`` is stamped, queued
        waiters the provider can serve are granted, and waiters only the old record could
        serve are failed at once.
        """
        record, previous, renewed = self._table.upsert(provider, session)
        if renewed:
            self._breaker.clear_provider(record.id)
            self.speeds.clear_provider(record.id)
        for model_id in record.models:
            self._reservations.drain(model_id)
        if previous is not None:
            self._reservations.fail_stranded(previous)
        return record

    def remove_provider(self, provider_id: str) -> bool:
        """The provider's session ended: it stops being routable at once.

        Its record is kept as offline so a first Reserve can queue for it while it may
        reconnect (A7, for ``reconnect_grace_s``; ``sweep`` drops it later). Open
        reservations stay until released. Waiters only it could serve fail at once (C6).
        False if unknown or already offline.
        """
        previous = self._table.go_offline(provider_id)
        if previous is None:
            return False
        self._reservations.fail_stranded(previous)
        return True

    def set_trusted(self, provider_id: str, trusted: bool) -> bool:
        """Record a challenge verdict (F1): untrusted providers are not routable.

        Becoming trusted drains the queue; losing trust fails waiters only it could serve.
        False if the provider is unknown.
        """
        previous = self._table.set_trusted(provider_id, trusted)
        if previous is None:
            return False
        if previous.trusted != trusted:
            if trusted:
                for model_id in previous.models:
                    self._reservations.drain(model_id)
            else:
                self._reservations.fail_stranded(previous)
        return True

    def update_load(
        self,
        provider_id: str,
        loads: Mapping[str, ModelLoad],
        limits: Mapping[str, int] | None = None,
    ) -> bool:
        """Heartbeat: replace the provider's per-model loads and refresh ``last_seen``;
        ``limits`` carries changed per-model concurrency limits (more room serves the
        queue at once, as does a provider back from silence).

        Models missing from ``loads`` count as idle. Does not bring an offline provider
        back (only ``upsert_provider`` does). False if the provider is unknown.
        """
        more_room = self._table.heartbeat(provider_id, loads, limits)
        if more_room is None:
            return False
        for model_id in more_room:
            self._reservations.drain(model_id)
        return True

    def sweep(self) -> None:
        """Periodic housekeeping (call about once per heartbeat interval).

        Fails waiters past their deadline (QueueTimeout) and waiters only silent providers
        could serve (a provider silent for ``heartbeat_timeout_s`` is gated as offline until
        its next heartbeat), forgets providers not seen for ``reconnect_grace_s``, serves
        waiters a lapsed cooldown lets through, and sweeps stale breaker entries and speed
        estimates.
        """
        now = self._clock()
        self._reservations.expire(now)
        self._table.sweep(now, self._reservations.fail_stranded)
        self._reservations.drain_all()
        self._breaker.sweep(now)
        self.speeds.sweep(now)
        self._reservations.forget_released(now)

    # ------------------------------------------------------------------ queries

    def explain(self, ask: Ask) -> list[ProviderVerdict]:
        """Every provider's verdict on ``ask`` and every reason (C7); eligible first, then
        those serving the model, then the rest, each by id (so a capped reply keeps the
        rows that matter). Takes no slot."""
        ask = ask.settled(self.settings.default_max_tokens)
        verdicts = self._admission.verdicts(ask, self._table.providers(), self._clock())
        rows = [
            ProviderVerdict(p.id, p.serial, p.version, not reasons, tuple(reasons))
            for p, reasons in verdicts
        ]
        serves = {p.id for p in self._store.serving(ask.model_id)}
        rows.sort(
            key=lambda row: (not row.eligible, row.provider_id not in serves, row.provider_id)
        )
        return rows

    def list_models(self) -> tuple[list[str], bool]:
        """The models live providers serve, de-duplicated and sorted, at most
        ``list_models_max`` of them; and whether some were left out. When there are more,
        the models the most live providers serve are kept (ties by id): one provider
        advertising thousands of models cannot push out what the fleet serves."""
        served: Counter[str] = Counter(m for p in self._table.live() for m in p.models)
        cap = self.settings.list_models_max
        if len(served) <= cap:
            return sorted(served), False
        kept = sorted(served, key=lambda m: (-served[m], m))[:cap]
        return sorted(kept), True

    def online_provider_ids(self) -> list[str]:
        """Sorted ids of the live providers (what operators and the launcher wait on), at
        most ``listed_providers_max`` of them (``stats().providers_online`` counts all)."""
        return sorted(p.id for p in self._table.live())[: self.settings.listed_providers_max]

    def queue_depth(self, model_id: str) -> int:
        """Waiters queued for ``model_id``."""
        return self._queue.depth(model_id)

    def retry_after_s(self, model_id: str) -> int:
        """Retry-After for a refusal: 2 s with an empty queue, else depth x 3 in 2..30 s."""
        return self._admission.retry_after_s(model_id)

    def stats(self) -> RegistryStats:
        """A snapshot of counts for metrics (O(providers))."""
        return RegistryStats(
            providers_online=len(self._table.live()),
            slots_in_use=self._store.slots_in_use(),
            queue_depth=self._queue.depths(),
            cooldowns_entered=self._breaker.cooldowns_entered,
            admissions={rung.value: n for rung, n in self._admissions.items()},
        )

    # ------------------------------------------------------------------ reserve / release

    async def reserve(self, ask: Ask, *, timeout_s: float | None = None) -> Reservation:
        """Select a provider (C5) and take a slot, waiting in the model's queue if the ask
        may (A7) for at most ``min(timeout_s, queue_wait_s)``.

        Raises UnknownModel, NoCapableProvider, NoEligibleProvider, ModelTooLarge,
        ProvidersBusy (full and may not queue), QueueFull or QueueTimeout. Cancel-safe: a
        cancelled or timed-out wait leaves no waiter and no slot behind. An
        ``ask.reservation_id`` released before it was granted is never granted (B12). A
        first Reserve (``may_queue``) is the request's admission and counts in ``stats``.
        """
        ask = ask.settled(self.settings.default_max_tokens)
        try:
            reservation = await self._reservations.reserve(ask, timeout_s=timeout_s)
        except RegistryError as err:
            if ask.may_queue:
                self._admissions[rung_of(err)] += 1
            raise
        if ask.may_queue:
            self._admissions[Rung.QUEUE if reservation.queued_s > 0 else Rung.OK] += 1
        return reservation

    def reserve_now(self, ask: Ask) -> Reservation | None:
        """What ``reserve`` does when a provider has a free slot now, without a coroutine:
        the reservation, or None with nothing changed (then ``reserve`` decides: refuse or
        wait in the queue). For callers that answer many reserves on one stream."""
        ask = ask.settled(self.settings.default_max_tokens)
        now = self._clock()
        granted = self._reservations.try_reserve(ask, now, enqueued_at=now)
        if granted is not None and ask.may_queue:
            self._admissions[Rung.OK] += 1
        return granted

    def select(self, ask: Ask) -> Provider | None:
        """The provider ``reserve`` would pick now, without taking a slot (None if nobody
        is eligible): the pure selection cost, for the registry benchmark. Draws the rng."""
        return self._reservations.choose(
            ask.settled(self.settings.default_max_tokens), self._clock()
        )

    def release(self, reservation_id: str, outcome: Outcome) -> ReleaseResult:
        """Free the reservation's slot exactly once and feed the breaker (C4, B12); see
        ``Reservations.release``."""
        return self._reservations.release(reservation_id, outcome)
