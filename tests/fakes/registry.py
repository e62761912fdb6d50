"""Registry fakes: providers and models with sensible defaults, and a registry on a fake clock."""

from __future__ import annotations

import random
from collections.abc import Mapping

from registry_svc.model import ModelInfo, Provider, RegistrySettings
from registry_svc.registry import Registry
from tests.fakes.clock import FakeClock


def model(model_id: str = "m", **kwargs: object) -> ModelInfo:
    kwargs.setdefault("max_concurrency", 1)
    return ModelInfo(model_id, **kwargs)  # type: ignore[arg-type]


def provider(
    provider_id: str,
    *,
    version: str = "0.6.5",
    models: Mapping[str, ModelInfo] | None = None,
    trusted: bool = True,
    decode_tps: float = 50.0,
    prefill_tps: float = 1000.0,
    **kwargs: object,
) -> Provider:
    return Provider(
        id=provider_id,
        version=version,
        models=dict(models) if models is not None else {"m": model()},
        trusted=trusted,
        decode_tps=decode_tps,
        prefill_tps=prefill_tps,
        **kwargs,  # type: ignore[arg-type]
    )


def make_registry(
    settings: RegistrySettings | None = None, *, seed: int = 0
) -> tuple[Registry, FakeClock]:
    clock = FakeClock()
    registry = Registry(settings or RegistrySettings(), clock=clock, rng=random.Random(seed))
    return registry, clock
