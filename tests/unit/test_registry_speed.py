"""C5 measured speed: the moving estimates per (provider, model), what the cost reads from
them, and selection once a silent provider's slow first-content samples are recorded."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from registry_svc.model import Ask, Outcome, RegistrySettings, SpeedSample
from registry_svc.registry import Registry
from registry_svc.speed import SpeedBook
from tests.fakes.registry import make_registry, model, provider

FAST = SpeedSample(ttft_s=0.05, decode_tps=40.0)
SLOW = SpeedSample(ttft_s=5.0, no_content=True)  # no first content within the 5 s deadline


def test_c5_an_estimate_counts_only_once_it_has_enough_samples() -> None:
    book = SpeedBook(min_samples=3)
    for n in range(1, 4):
        book.record("p", "m", SpeedSample(ttft_s=2.0, decode_tps=20.0), now=float(n))
        estimate = book.get("p", "m")
        assert estimate is not None and estimate.ttft_n == n
        if n < 3:
            assert (estimate.ttft_cost_s, estimate.decode_s) == (0.0, 0.0), "advertised rules"
    assert estimate is not None and estimate.ttft_cost_s == pytest.approx(2.0)
    assert estimate.decode_s == pytest.approx(1 / 20.0)


def test_c5_the_estimate_is_a_moving_average_of_recent_samples() -> None:
    book = SpeedBook(min_samples=1, weight=0.5)
    for ttft in (1.0, 3.0, 3.0):
        book.record("p", "m", SpeedSample(ttft_s=ttft), now=0.0)
    estimate = book.get("p", "m")
    assert estimate is not None
    assert estimate.ttft_s == pytest.approx(2.5)  # 1 -> 2 -> 2.5: recent samples weigh more


def test_c5_a_slow_sample_is_a_lower_bound_and_never_lowers_the_estimate() -> None:
    book = SpeedBook(min_samples=1, weight=0.5)
    book.record("p", "m", SpeedSample(ttft_s=8.0), now=0.0)
    book.record("p", "m", SpeedSample(ttft_s=2.0, no_content=True), now=0.0)
    estimate = book.get("p", "m")
    assert estimate is not None and estimate.ttft_s == pytest.approx(8.0)
    book.record("p", "m", SpeedSample(ttft_s=12.0, no_content=True), now=0.0)
    assert estimate.ttft_s == pytest.approx(10.0), "a slow sample above it raises it"
    book.record("p", "m", SpeedSample(ttft_s=2.0), now=0.0)
    assert estimate.ttft_s == pytest.approx(6.0), "a measured first content lowers it"


def test_c5_slow_without_a_shown_decode_rate_makes_the_advertised_rate_unproven() -> None:
    book = SpeedBook(min_samples=2, unproven_tps=1.0)
    book.record("p", "m", SLOW, now=0.0)
    estimate = book.get("p", "m")
    assert estimate is not None and estimate.decode_s == 0.0
    book.record("p", "m", SLOW, now=0.0)
    assert estimate.decode_s == pytest.approx(1.0), "costed at 1 tps, whatever it advertises"
    book.record("p", "m", SpeedSample(ttft_s=0.1, decode_tps=50.0), now=0.0)
    assert estimate.decode_s == pytest.approx(1.0), "one rate shown is not enough"
    book.record("p", "m", SpeedSample(ttft_s=0.1, decode_tps=50.0), now=0.0)
    assert estimate.decode_s == pytest.approx(1 / 50.0)


@pytest.mark.parametrize(
    "sample",
    [
        SpeedSample(ttft_s=math.nan),
        SpeedSample(ttft_s=-1.0),
        SpeedSample(ttft_s=math.inf),
        SpeedSample(decode_tps=math.nan),
        SpeedSample(decode_tps=-5.0),
        SpeedSample(),
    ],
)
def test_c5_samples_that_are_not_numbers_are_ignored(sample: SpeedSample) -> None:
    book = SpeedBook()
    book.record("p", "m", sample, now=0.0)
    assert len(book) == 0


def test_c5_estimates_are_bounded_in_number_and_in_age() -> None:
    book = SpeedBook(max_entries=3, ttl_s=10.0)
    for i in range(5):
        book.record(f"p{i}", "m", FAST, now=float(i))
    assert len(book) == 3
    assert book.get("p0", "m") is None and book.get("p1", "m") is None, "oldest evicted"
    book.record("p2", "m", FAST, now=20.0)  # measured again: now the newest
    assert book.sweep(now=21.0) == 2
    assert list(book.for_model("m")) == ["p2"]
    assert book.sweep(now=31.0) == 1 and len(book) == 0 and not book.for_model("m")


def test_c5_clear_provider_forgets_every_model_of_it() -> None:
    book = SpeedBook()
    for m in ("a", "b"):
        book.record("p", m, FAST, now=0.0)
        book.record("q", m, FAST, now=0.0)
    book.clear_provider("p")
    assert (book.get("p", "a"), book.get("p", "b")) == (None, None)
    assert book.get("q", "a") is not None and len(book) == 2


# ---- through the registry: releases feed it, selection reads it -------------------------


def release_with(registry: Registry, provider_id: str, sample: SpeedSample) -> None:
    """One attempt on `provider_id`, released with `sample` (as the Slots stream does)."""
    reservation = registry.reserve_now(Ask("m", allowlist=frozenset({provider_id})))
    assert reservation is not None and reservation.provider_id == provider_id
    status = Outcome.CANCELLED if sample.no_content else Outcome.SUCCESS
    assert registry.release(reservation.id, Outcome(status, speed=sample)).released


def picks(registry: Registry, n: int = 600, max_tokens: int = 0) -> Counter[str]:
    chosen = Counter[str]()
    for _ in range(n):
        p = registry.select(Ask("m", max_tokens=max_tokens))
        assert p is not None
        chosen[p.id] += 1
    return chosen


def fleet() -> tuple[Registry, list[str]]:
    """Two honest providers and a silent one that advertises the fastest decode there is:
    it adds seconds to every request it gets and the backup always wins, so it never
    completes and is never cooled."""
    registry, _ = make_registry(RegistrySettings(near_tie_window_s=3.0), seed=1)
    honest = ["h1", "h2"]
    for pid in honest:
        registry.upsert_provider(provider(pid, decode_tps=200.0, models={"m": model()}))
    registry.upsert_provider(provider("silent", decode_tps=10_000.0, models={"m": model()}))
    return registry, honest


def test_c5_a_silent_provider_is_picked_rarely_once_its_slow_samples_are_recorded() -> None:
    registry, honest = fleet()
    before = picks(registry)
    assert before["silent"] > 150, "on advertised figures it looks as good as anyone"
    for pid in honest:
        for _ in range(3):
            release_with(registry, pid, SpeedSample(ttft_s=0.05, decode_tps=180.0))
    for _ in range(3):  # lost the race after the race point, nothing sent: 3 slow samples
        release_with(registry, "silent", SLOW)
    for max_tokens in (0, 2048):  # long answers too: its advertised rate is unproven
        after = picks(registry, max_tokens=max_tokens)
        assert after["silent"] <= 6, after  # rarely: at most 1 %
        assert min(after[pid] for pid in honest) > 200, "the honest ones share the load"


def test_c5_measured_speed_survives_a_models_update_but_not_a_new_registration() -> None:
    registry, _ = fleet()
    for _ in range(3):
        release_with(registry, "silent", SLOW)
    assert registry.speeds.get("silent", "m") is not None
    again = provider("silent", decode_tps=10_000.0, models={"m": model(), "n": model("n")})
    registry.upsert_provider(again, session="s1")  # a registration (the stored one had none)
    assert registry.speeds.get("silent", "m") is None, "a new registration starts clean (C4)"
    for _ in range(3):
        release_with(registry, "silent", SLOW)
    registry.upsert_provider(again, session="s1")  # the same session: an update
    assert registry.speeds.get("silent", "m") is not None


def test_c5_a_sample_of_an_earlier_registration_is_dropped() -> None:
    registry, _ = fleet()
    held = registry.reserve_now(Ask("m", allowlist=frozenset({"silent"})))
    assert held is not None
    registry.upsert_provider(provider("silent", models={"m": model()}))  # registers again
    registry.release(held.id, Outcome(Outcome.CANCELLED, speed=SLOW))
    assert registry.speeds.get("silent", "m") is None
