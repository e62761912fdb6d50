"""Slots, the wait queue and the breaker feed: taking a slot (C5), waiting for one (C6),
and giving it back exactly once (B12), which feeds the breaker (C4) and the measured speed
(C5).

Everything except ``reserve`` is synchronous and runs to completion without yielding, so on
one event loop a check and the slot it takes cannot interleave with another request's (no
oversubscription without locks).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from registry_svc.admission import Admission
from registry_svc.breaker import Breaker
from registry_svc.model import Ask, Outcome, Provider, RegistrySettings, Shape
from registry_svc.queue import Waiter, WaitQueue
from registry_svc.scheduler import CostModel, pick
from registry_svc.speed import SpeedBook
from registry_svc.store import ProviderStore, ReservationRecord


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


class Reservations:
    """The slots held on providers and the per-model wait queue.

    Asks are taken settled (``Ask.settled``). Time comes from ``clock``; ``rng`` breaks
    near-ties (C5) and names reservations whose caller chose no id.
    """

    def __init__(
        self,
        settings: RegistrySettings,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        store: ProviderStore,
        breaker: Breaker,
        speeds: SpeedBook,
        admission: Admission,
        queue: WaitQueue[Ask, Reservation],
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._rng = rng
        self._store = store
        self._breaker = breaker
        self._speeds = speeds
        self._admission = admission
        self._queue = queue
        self._cost = CostModel(settings)
        self._released_early: dict[str, float] = {}  # reservation id -> when released

    def choose(self, ask: Ask, now: float) -> Provider | None:
        """The provider ``ask`` would get now (C5, B10), without taking a slot; None if
        nobody is eligible. Draws the rng on a near-tie."""
        model_id = ask.model_id
        ranked = self._cost.rank(
            self._admission.candidates(ask, now),
            model_id,
            ask.prompt_tokens,
            ask.max_tokens,
            self._speeds.for_model(model_id),
        )
        return pick(
            ranked,
            self._rng,
            near_tie_window_s=self._settings.near_tie_window_s,
            avoid_version=ask.avoid_version,
        )

    def try_reserve(self, ask: Ask, now: float, *, enqueued_at: float) -> Reservation | None:
        """Take a slot on the provider ``choose`` picks; None, with nothing changed, if
        nobody is eligible now or the ask's id was released already."""
        if ask.reservation_id is not None and ask.reservation_id in self._released_early:
            return None  # its caller gave up and released it already: never grant it
        provider = self.choose(ask, now)
        if provider is None:
            return None
        model_id, shape = ask.model_id, ask.traits.shape
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

    async def reserve(self, ask: Ask, *, timeout_s: float | None) -> Reservation:
        """A slot now, or after a wait in the model's queue when the ladder allows one
        (``Admission.must_wait``), for at most ``min(timeout_s, queue_wait_s)``.

        Raises the ladder's refusals, QueueFull or QueueTimeout. Cancel-safe: a cancelled or
        timed-out wait leaves no waiter and no slot behind.
        """
        now = self._clock()
        granted = self.try_reserve(ask, now, enqueued_at=now)
        if granted is not None:
            return granted
        self._admission.must_wait(ask, now)
        model_id = ask.model_id
        wait_s = self._settings.queue_wait_s
        if timeout_s is not None:
            wait_s = max(0.0, min(wait_s, timeout_s))
        waiter = self._queue.push(model_id, ask, now=now, wait_s=wait_s)
        if waiter is None:
            raise self._admission.queue_full(model_id)
        try:
            async with asyncio.timeout(wait_s):
                return await waiter.future
        except TimeoutError:
            self._abandon(waiter)
            raise self._admission.timed_out(model_id) from None
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    def release(self, reservation_id: str, outcome: Outcome) -> ReleaseResult:
        """Free the reservation's slot exactly once and feed the breaker (C4, B12).

        A second release of the same id (or an unknown id) changes nothing and returns
        ``released=False``; an unknown id is remembered for ``released_early_ttl_s``, so a
        Reserve still on its way under that id is never granted. Status 200 is a success,
        0 a neutral cancel; other codes are errors the breaker counts if they are counted
        codes. The outcome's speed sample, if any, feeds the measured speed of (provider,
        model) whatever the status. Outcomes of reservations from an earlier registration of
        the provider feed neither. The freed slot goes to the oldest queued waiter that can
        use it.
        """
        record = self._store.pop_reservation(reservation_id)
        if record is None:
            if reservation_id:
                self._released_early[reservation_id] = self._clock()
                if len(self._released_early) > self._settings.released_early_max:
                    del self._released_early[next(iter(self._released_early))]
            return ReleaseResult(released=False)
        self._store.release_slot(record.provider_id, record.model_id)
        entered = False
        if outcome.status_code != Outcome.CANCELLED or outcome.speed is not None:
            provider = self._store.get(record.provider_id)
            if provider is not None and provider.registration == record.registration:
                now = self._clock()
                if outcome.speed is not None:
                    self._speeds.record(record.provider_id, record.model_id, outcome.speed, now)
                if outcome.status_code != Outcome.CANCELLED:
                    shape = record.shape if outcome.shape is None else outcome.shape
                    entered = self._breaker.record(
                        record.provider_id, record.model_id, shape, outcome.status_code, now
                    )
        self.drain(record.model_id, max_grants=1)
        return ReleaseResult(released=True, cooldown_entered=entered)

    def drain(self, model_id: str, *, max_grants: int | None = None) -> None:
        """Serve the model's waiters oldest first while providers can take them (C6)."""
        granted = 0
        for waiter in self._queue.waiting(model_id):
            if max_grants is not None and granted >= max_grants:
                return
            reservation = self.try_reserve(
                waiter.request, self._clock(), enqueued_at=waiter.enqueued_at
            )
            if reservation is None:
                continue
            if self._queue.grant(waiter, reservation):
                granted += 1
            else:
                self.release(reservation.id, Outcome(Outcome.CANCELLED))

    def drain_all(self) -> None:
        """Serve every queued model: slots can become usable without a release or a
        registration (a cooldown ran out)."""
        for model_id in self._queue.models():
            self.drain(model_id)

    def fail_stranded(self, previous: Provider) -> None:
        """``previous`` (the record before a change) may no longer serve anyone: fail each
        waiter it could have served that no provider can serve any more (C6)."""
        now = self._clock()
        for model_id in previous.models:
            if not self._queue.waiting(model_id):
                continue
            self.drain(model_id)
            for waiter in self._queue.waiting(model_id):
                refusal = self._admission.stranded(waiter.request, previous, now)
                if refusal is not None:
                    self._queue.fail(waiter, refusal)

    def expire(self, now: float) -> None:
        """Fail waiters past their deadline (QueueTimeout)."""
        for waiter in self._queue.expired(now):
            self._queue.remove(waiter)  # before the retry-after, which counts the queue
            self._queue.fail(waiter, self._admission.timed_out(waiter.model_id))

    def forget_released(self, now: float) -> None:
        """Forget releases-before-grant older than ``released_early_ttl_s``."""
        horizon = now - self._settings.released_early_ttl_s
        for rid, at in list(self._released_early.items()):
            if at >= horizon:
                break  # insertion order is time order
            del self._released_early[rid]

    def _abandon(self, waiter: Waiter[Ask, Reservation]) -> None:
        """Undo a wait that ended without its result being used."""
        self._queue.remove(waiter)
        future = waiter.future
        if not future.done():
            future.cancel()
        elif not future.cancelled():
            if future.exception() is None:
                # Granted in the same instant the wait ended: give the slot back.
                self.release(future.result().id, Outcome(Outcome.CANCELLED))
