"""The registry's bounds on what it is told (registry_svc/wire.py, C8): every figure a
provider could choose is clamped before the registry believes it (defence in depth: the
dispatcher's link validates too)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2
from registry_svc.model import Ask, RegistrySettings
from registry_svc.registry import Registry
from registry_svc.wire import LIMITS, WireError, loads_from, provider_from, speed_from
from tests.fakes.clock import FakeClock

INF, NAN = math.inf, math.nan


def info(**fields: object) -> registry_pb2.ProviderInfo:
    fields.setdefault("id", "p")
    fields.setdefault("models", [common_pb2.ModelInfo(id="m", max_concurrency=2)])
    return registry_pb2.ProviderInfo(trusted=True, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("advertised", "believed"),
    [(-5.0, 0.0), (NAN, 0.0), (INF, LIMITS.max_decode_tps), (1e300, LIMITS.max_decode_tps)],
)
def test_c8_advertised_rates_are_clamped(advertised: float, believed: float) -> None:
    p = provider_from(info(decode_tps=advertised, prefill_tps=advertised))
    assert p.decode_tps == believed
    assert p.prefill_tps == (believed and LIMITS.max_prefill_tps)


def test_c8_models_are_capped_in_number_and_id_length() -> None:
    models = [common_pb2.ModelInfo(id="")] + [
        common_pb2.ModelInfo(id=f"m{i}", max_concurrency=10**9) for i in range(5000)
    ]
    models.insert(3, common_pb2.ModelInfo(id="x" * (LIMITS.max_id_chars + 1)))
    p = provider_from(info(models=models, version="v" * 10_000, serial="s" * 10_000))
    assert len(p.models) == LIMITS.max_models
    assert "" not in p.models and all(len(m) <= LIMITS.max_id_chars for m in p.models)
    assert {m.max_concurrency for m in p.models.values()} == {LIMITS.max_concurrency}
    assert len(p.version) == len(p.serial) == LIMITS.max_id_chars


@pytest.mark.parametrize("provider_id", ["", "p" * (LIMITS.max_id_chars + 1)])
def test_c8_a_provider_id_out_of_bounds_is_refused(provider_id: str) -> None:
    with pytest.raises(WireError):
        provider_from(info(id=provider_id))


def test_c8_loads_are_clamped_to_zero_and_a_bound() -> None:
    request = registry_pb2.ReportLoadRequest(
        provider_id="p",
        loads=[
            registry_pb2.ModelLoad(model="a", running=-7, waiting=-1000),
            registry_pb2.ModelLoad(model="b", running=2**31 - 1, waiting=2**31 - 1),
            registry_pb2.ModelLoad(model="c", max_concurrency=2**31 - 1),
            registry_pb2.ModelLoad(model="d", max_concurrency=-3),
        ],
    )
    loads, limits = loads_from(request)
    assert (loads["a"].running, loads["a"].waiting) == (0, 0)
    assert (loads["b"].running, loads["b"].waiting) == (LIMITS.max_load, LIMITS.max_load)
    assert limits == {"c": LIMITS.max_concurrency}


def test_c8_speed_samples_are_clamped_or_dropped() -> None:
    def sample(**speed: object) -> registry_pb2.ReleaseRequest:
        return registry_pb2.ReleaseRequest(
            reservation_id="r",
            speed=registry_pb2.AttemptSpeed(**speed),  # type: ignore[arg-type]
        )

    assert speed_from(registry_pb2.ReleaseRequest(reservation_id="r")) is None
    assert speed_from(sample(ttft_s=NAN)) is None
    assert speed_from(sample(ttft_s=-1.0)) is None
    got = speed_from(sample(ttft_s=1e9, no_content=True, decode_tps=1e12))
    assert got is not None
    assert (got.ttft_s, got.no_content, got.decode_tps) == (
        LIMITS.max_ttft_s,
        True,
        LIMITS.max_decode_tps,
    )
    infinite = speed_from(sample(ttft_s=1.0, decode_tps=INF))
    assert infinite is not None and infinite.decode_tps == 0.0, "not a rate: dropped"
    decode_only = speed_from(sample(decode_tps=30.0))
    assert decode_only is not None and decode_only.ttft_s is None, "no ttft is not 0 s"


def test_c5_c8_a_negative_waiting_count_cannot_capture_the_traffic() -> None:
    """The issue's attack: a heartbeat with waiting = -1000 made its provider's cost
    negative, and it won every request. Clamped, it is one provider among equals."""
    registry = Registry(RegistrySettings(), clock=FakeClock(), rng=random.Random(5))
    for pid in ("honest-1", "honest-2", "liar"):
        registry.upsert_provider(provider_from(info(id=pid, decode_tps=100.0)))
    loads, limits = loads_from(
        registry_pb2.ReportLoadRequest(
            provider_id="liar",
            loads=[registry_pb2.ModelLoad(model="m", running=-50, waiting=-1000)],
        )
    )
    registry.update_load("liar", loads, limits)
    chosen = Counter[str]()
    for _ in range(300):
        p = registry.select(Ask("m"))
        assert p is not None
        chosen[p.id] += 1
    assert chosen["liar"] < 150, chosen
    assert min(chosen.values()) > 50, chosen
