"""Normalizer settings, read once from `HEDGEROW_*` env at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from contract.schema import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_DEPTH
from svckit.auth import ServiceAuth
from svckit.env import env_int, env_str

DEFAULT_PORT = 50061
DEFAULT_METRICS_PORT = 9161


@dataclass(frozen=True)
class NormalizerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    log_level: str = "info"
    auth: ServiceAuth = field(default_factory=ServiceAuth)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NormalizerConfig:
        e = os.environ if env is None else env
        return cls(
            host=env_str(e, "HEDGEROW_NORMALIZER_HOST", cls.host),
            port=env_int(e, "HEDGEROW_NORMALIZER_PORT", cls.port),
            metrics_port=env_int(
                e, "HEDGEROW_NORMALIZER_METRICS_PORT", cls.metrics_port, minimum=-1
            ),
            max_body_bytes=env_int(e, "HEDGEROW_NORMALIZE_MAX_BODY_BYTES", cls.max_body_bytes),
            max_depth=env_int(e, "HEDGEROW_NORMALIZE_MAX_DEPTH", cls.max_depth, minimum=1),
            log_level=env_str(e, "HEDGEROW_LOG_LEVEL", cls.log_level),
            auth=ServiceAuth.from_env(e),
        )
