"""Shared fakes for the registry unit tests (no tests here)."""

from __future__ import annotations

import random
from collections.abc import Mapping

from registry_svc.model import ModelInfo, Provider, RegistrySettings
from registry_svc.registry import Registry


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
