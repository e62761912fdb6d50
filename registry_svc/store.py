"""Registry state behind an interface: the provider table, slot counts and open
reservations.

The registry only talks to ``ProviderStore``; ``InMemoryStore`` is the single-replica
implementation. The operations are shaped for a shared store (Redis) to follow: the
provider table is read by model (a hash per model), slot taking is one atomic
check-and-increment against a limit (a Lua script), and releasing a reservation is one
atomic pop (GETDEL), which is what makes a second release of the same id a no-op.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from registry_svc.model import Provider, Shape


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    """An open reservation: which slot it holds and what its outcome feeds."""

    id: str
    provider_id: str
    model_id: str
    shape: Shape
    version: str
    registration: int


class ProviderStore(Protocol):
    """State the registry keeps; every method is atomic with respect to the others."""

    def get(self, provider_id: str) -> Provider | None:
        """The provider record, or None."""

    def put(self, provider: Provider) -> Provider | None:
        """Insert or replace by id; return the previous record."""

    def delete(self, provider_id: str) -> Provider | None:
        """Remove by id; return the removed record."""

    def providers(self) -> Collection[Provider]:
        """Every provider record, in any state."""

    def serving(self, model_id: str) -> Collection[Provider]:
        """Every provider record (in any state) that lists ``model_id``."""

    def in_use(self, provider_id: str, model_id: str) -> int:
        """Slots held for (provider, model)."""

    def slots_for_model(self, model_id: str) -> Mapping[str, int]:
        """Provider id -> slots held for ``model_id`` (providers holding none may be absent)."""

    def try_acquire(self, provider_id: str, model_id: str, limit: int) -> bool:
        """Take one slot if fewer than ``limit`` are held; True if taken."""

    def release_slot(self, provider_id: str, model_id: str) -> None:
        """Give one slot back (never below zero)."""

    def slots_in_use(self) -> int:
        """Slots held across all providers and models."""

    def add_reservation(self, record: ReservationRecord) -> bool:
        """Store ``record``; False (and no change) if its id is already taken."""

    def pop_reservation(self, reservation_id: str) -> ReservationRecord | None:
        """Remove and return the reservation; None if unknown or already popped."""


_NO_SLOTS: Mapping[str, int] = MappingProxyType({})


class InMemoryStore:
    """``ProviderStore`` in process memory (one registry replica)."""

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._by_model: dict[str, dict[str, Provider]] = {}
        self._slots: dict[str, dict[str, int]] = {}  # model -> provider -> held (> 0)
        self._reservations: dict[str, ReservationRecord] = {}

    def get(self, provider_id: str) -> Provider | None:
        return self._providers.get(provider_id)

    def put(self, provider: Provider) -> Provider | None:
        previous = self._providers.get(provider.id)
        if previous is not None:
            self._unindex(previous)
        self._providers[provider.id] = provider
        for model_id in provider.models:
            self._by_model.setdefault(model_id, {})[provider.id] = provider
        return previous

    def delete(self, provider_id: str) -> Provider | None:
        previous = self._providers.pop(provider_id, None)
        if previous is not None:
            self._unindex(previous)
        return previous

    def providers(self) -> Collection[Provider]:
        return self._providers.values()

    def serving(self, model_id: str) -> Collection[Provider]:
        index = self._by_model.get(model_id)
        return () if index is None else index.values()

    def in_use(self, provider_id: str, model_id: str) -> int:
        held = self._slots.get(model_id)
        return 0 if held is None else held.get(provider_id, 0)

    def slots_for_model(self, model_id: str) -> Mapping[str, int]:
        return self._slots.get(model_id, _NO_SLOTS)

    def try_acquire(self, provider_id: str, model_id: str, limit: int) -> bool:
        held = self._slots.setdefault(model_id, {})
        count = held.get(provider_id, 0)
        if count >= limit:
            if not held:
                del self._slots[model_id]
            return False
        held[provider_id] = count + 1
        return True

    def release_slot(self, provider_id: str, model_id: str) -> None:
        held = self._slots.get(model_id)
        if held is None:
            return
        count = held.get(provider_id, 0)
        if count > 1:
            held[provider_id] = count - 1
            return
        # Zero entries are dropped so an idle fleet holds no slot state at all.
        held.pop(provider_id, None)
        if not held:
            del self._slots[model_id]

    def slots_in_use(self) -> int:
        return sum(sum(held.values()) for held in self._slots.values())

    def add_reservation(self, record: ReservationRecord) -> bool:
        if record.id in self._reservations:
            return False
        self._reservations[record.id] = record
        return True

    def pop_reservation(self, reservation_id: str) -> ReservationRecord | None:
        return self._reservations.pop(reservation_id, None)

    def _unindex(self, provider: Provider) -> None:
        for model_id in provider.models:
            index = self._by_model.get(model_id)
            if index is not None:
                index.pop(provider.id, None)
                if not index:
                    del self._by_model[model_id]
