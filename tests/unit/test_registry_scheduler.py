"""C5 cost model, near-tie spreading and B10's soft avoid_version."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from registry_svc.model import ModelLoad, Provider, RegistrySettings, SpeedSample
from registry_svc.scheduler import CostModel, Ranked, pick
from registry_svc.speed import Estimate, SpeedBook
from tests.fakes.registry import provider

COST = CostModel(RegistrySettings())


def cost(
    p: Provider,
    *,
    pending: int = 0,
    prompt: int = 0,
    max_tokens: int = 0,
    measured: Estimate | None = None,
) -> float:
    book = {} if measured is None else {p.id: measured}
    return COST.cost(p, "m", pending, prompt, max_tokens, book)


def measured(*, decode_tps: float = 0.0, ttft_s: float | None = None) -> Estimate:
    """An estimate with enough samples (3, the default) of each kind given."""
    book = SpeedBook()
    for _ in range(3):
        book.record("p", "m", SpeedSample(ttft_s=ttft_s, decode_tps=decode_tps), now=0.0)
    estimate = book.get("p", "m")
    assert estimate is not None
    return estimate


def test_c5_effective_decode_tps() -> None:
    # measured, else advertised / (1 + 0.27 x running)
    idle = provider("p", decode_tps=100)
    assert cost(idle, max_tokens=100) == pytest.approx(1.0)
    busy = provider("p", decode_tps=100, loads={"m": ModelLoad(running=2)})
    assert cost(busy, max_tokens=100) == pytest.approx(100 / (100 / 1.54))
    loaded = provider("p", decode_tps=100, loads={"m": ModelLoad(running=9)})
    assert cost(loaded, max_tokens=42, measured=measured(decode_tps=42)) == pytest.approx(1.0)
    # Not derated by what is pending either: it was measured under whatever load there was.
    assert cost(
        loaded, pending=20, max_tokens=42, measured=measured(decode_tps=42)
    ) == pytest.approx(20 * 0.75 + 1.0)


def test_c5_cost_formula() -> None:
    load = ModelLoad(running=3, waiting=2, backlog_tokens=500)
    p = provider("p", decode_tps=100, prefill_tps=2000, loads={"m": load})
    decode = 100 / (1 + 0.27 * 3)
    expected = 2 * 3.0 + 1 * 0.75 + 500 / decode + 1000 / 2000 + 256 / decode
    assert cost(p, pending=1, prompt=1000, max_tokens=256) == pytest.approx(expected)


def test_c5_cost_uses_measured_tps_when_known() -> None:
    """A provider advertising 100 tps but measured at 20 costs what it was measured at."""
    p = provider("p", decode_tps=100, loads={"m": ModelLoad(running=5)})
    assert cost(p, max_tokens=200, measured=measured(decode_tps=20)) == pytest.approx(200 / 20)


def test_c5_cost_adds_measured_first_content_time() -> None:
    p = provider("p", decode_tps=100, prefill_tps=1000)
    base = cost(p, prompt=100, max_tokens=100)
    assert cost(p, prompt=100, max_tokens=100, measured=measured(ttft_s=4.0)) == pytest.approx(
        base + 4.0
    )


def test_c5_pending_slots_count_as_running() -> None:
    p = provider("p", decode_tps=100, prefill_tps=1000)
    assert cost(p, pending=2, max_tokens=100) == pytest.approx(
        2 * 0.75 + 100 / (100 / (1 + 0.27 * 2))
    )


def test_c5_cold_model_penalty_and_unknown_rates() -> None:
    cold = provider("p", decode_tps=100, loads={"m": ModelLoad(loaded=False)})
    assert cost(cold) == pytest.approx(30.0)
    unknown = provider("p", decode_tps=0, prefill_tps=0)
    assert cost(unknown, prompt=10, max_tokens=5) == pytest.approx(15.0)  # 1 tok/s each


@pytest.mark.parametrize(
    ("cheap", "dear"),
    [
        ({"decode_tps": 200}, {"decode_tps": 20}),
        ({"prefill_tps": 5000}, {"prefill_tps": 100}),
        ({}, {"loads": {"m": ModelLoad(waiting=1)}}),
        ({}, {"loads": {"m": ModelLoad(backlog_tokens=2000)}}),
        ({}, {"loads": {"m": ModelLoad(running=4)}}),
        ({}, {"loads": {"m": ModelLoad(loaded=False)}}),
    ],
)
def test_c5_cost_ordering(cheap: dict[str, object], dear: dict[str, object]) -> None:
    a = provider("a", **cheap)  # type: ignore[arg-type]
    b = provider("b", **dear)  # type: ignore[arg-type]
    assert cost(a, prompt=2000, max_tokens=512) < cost(b, prompt=2000, max_tokens=512)
    ranked = COST.rank([(a, 0), (b, 0)], "m", 2000, 512)
    assert pick(ranked, random.Random(0), near_tie_window_s=0.0) is a


def test_c5_rank_keeps_input_order() -> None:
    ps = [provider(f"p{i}", decode_tps=10 + i) for i in range(5)]
    assert [p for _, p in COST.rank([(p, 0) for p in ps], "m", 0, 100)] == ps


def ranked(*costs: tuple[str, float, str]) -> list[Ranked]:
    return [(c, provider(pid, version=ver)) for pid, c, ver in costs]


def test_c5_pick_cheapest_outside_the_window() -> None:
    pool = ranked(("a", 10.0, "1"), ("b", 6.9, "1"), ("c", 3.0, "1"))
    for seed in range(20):
        chosen = pick(pool, random.Random(seed), near_tie_window_s=3.0)
        assert chosen is not None and chosen.id == "c"


def test_c5_near_ties_are_spread_with_a_seeded_rng() -> None:
    pool = ranked(("a", 1.0, "1"), ("b", 3.9, "1"), ("c", 4.0, "1"), ("d", 4.1, "1"))
    rng = random.Random(42)
    seen = Counter(p.id for p in (pick(pool, rng, near_tie_window_s=3.0) for _ in range(3000)) if p)
    assert set(seen) == {"a", "b", "c"}  # d is 3.1 s dearer than the best
    assert all(800 < n < 1200 for n in seen.values())
    # Same seed, same choices.
    again = [pick(pool, random.Random(7)) for _ in range(5)]
    assert again == [pick(pool, random.Random(7)) for _ in range(5)]


def test_c5_pick_empty_is_none() -> None:
    assert pick([], random.Random(0)) is None
    assert pick([], random.Random(0), avoid_version="1") is None


def test_b10_avoid_version_prefers_another_version() -> None:
    pool = ranked(("old", 1.0, "0.6.3"), ("new", 50.0, "0.6.4"))
    for seed in range(10):
        chosen = pick(pool, random.Random(seed), avoid_version="0.6.3")
        assert chosen is not None and chosen.id == "new"


def test_b10_avoid_version_falls_back_to_the_full_pool() -> None:
    pool = ranked(("a", 1.0, "0.6.3"), ("b", 50.0, "0.6.3"))
    chosen = pick(pool, random.Random(0), avoid_version="0.6.3")
    assert chosen is not None and chosen.id == "a"


def test_b10_avoid_version_ties_only_among_the_preferred() -> None:
    pool = ranked(("x", 1.0, "0.6.3"), ("y", 2.0, "0.6.4"), ("z", 2.5, "0.6.5"))
    seen = {
        p.id for p in (pick(pool, random.Random(s), avoid_version="0.6.3") for s in range(50)) if p
    }
    assert seen == {"y", "z"}


def test_c5_cached_terms_never_mix_settings() -> None:
    p = provider("p", decode_tps=100, loads={"m": ModelLoad(loaded=False, waiting=1)})
    other = CostModel(RegistrySettings(cold_model_penalty_s=5.0, queue_depth_cost_s=1.0))
    assert cost(p) == pytest.approx(33.0)
    assert other.cost(p, "m", 0, 0, 0) == pytest.approx(6.0)
    assert cost(p) == pytest.approx(33.0)
    assert COST.cost(p, "other-model", 0, 0, 0) == pytest.approx(0.0)
