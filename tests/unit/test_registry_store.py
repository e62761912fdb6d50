"""The in-memory ProviderStore."""

from __future__ import annotations

from registry_svc.model import Shape
from registry_svc.store import InMemoryStore, ProviderStore, ReservationRecord
from tests.fakes.registry import model, provider


def test_store_indexes_providers_by_model() -> None:
    store: ProviderStore = InMemoryStore()
    a = provider("a", models={"m": model(), "x": model("x")})
    assert store.put(a) is None
    assert store.put(provider("b")) is None
    assert {p.id for p in store.serving("m")} == {"a", "b"}
    assert [p.id for p in store.serving("x")] == ["a"]
    assert list(store.serving("y")) == []
    # Replacing a record re-indexes it.
    assert store.put(provider("a", models={"y": model("y")})) is a
    assert [p.id for p in store.serving("m")] == ["b"]
    assert list(store.serving("x")) == []
    assert [p.id for p in store.serving("y")] == ["a"]
    removed = store.delete("b")
    assert removed is not None and removed.id == "b"
    assert store.delete("b") is None
    assert store.get("b") is None
    assert [p.id for p in store.providers()] == ["a"]


def test_b12_slots_are_bounded_and_return_to_zero() -> None:
    store = InMemoryStore()
    assert store.try_acquire("a", "m", 2)
    assert store.try_acquire("a", "m", 2)
    assert not store.try_acquire("a", "m", 2)
    assert not store.try_acquire("b", "m", 0)
    assert store.in_use("a", "m") == 2 and store.slots_in_use() == 2
    assert dict(store.slots_for_model("m")) == {"a": 2}
    store.release_slot("a", "m")
    store.release_slot("a", "m")
    store.release_slot("a", "m")  # never below zero
    store.release_slot("z", "nothing")
    assert store.in_use("a", "m") == 0 and store.slots_in_use() == 0
    assert dict(store.slots_for_model("m")) == {}


def test_b12_reservations_pop_once() -> None:
    store = InMemoryStore()
    record = ReservationRecord("r1", "a", "m", Shape.BASE, "0.6.5", 1)
    assert store.add_reservation(record)
    assert not store.add_reservation(record)
    assert not store.add_reservation(ReservationRecord("r1", "b", "m", Shape.BASE, "0.7", 1))
    assert store.pop_reservation("r1") == record  # the first one stayed
    assert store.pop_reservation("r1") is None
    assert store.add_reservation(record)  # its id is free again
