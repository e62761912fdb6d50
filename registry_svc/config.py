"""Registry settings, read once from `HEDGEROW_*` env at start (defaults: docs/settings.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from registry_svc.model import RegistrySettings
from svckit.auth import ServiceAuth
from svckit.env import env_float, env_int, env_str

DEFAULT_PORT = 50062
DEFAULT_METRICS_PORT = 9162


@dataclass(frozen=True)
class RegistryConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    settings: RegistrySettings = field(default_factory=RegistrySettings)
    log_level: str = "info"
    auth: ServiceAuth = field(default_factory=ServiceAuth)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RegistryConfig:
        e = os.environ if env is None else env
        d = RegistrySettings()
        settings = RegistrySettings(
            tools_version_floor=env_str(e, "HEDGEROW_TOOLS_VERSION_FLOOR", d.tools_version_floor),
            breaker_threshold=env_int(
                e, "HEDGEROW_BREAKER_THRESHOLD", d.breaker_threshold, minimum=1
            ),
            breaker_window_s=env_float(e, "HEDGEROW_BREAKER_WINDOW_S", d.breaker_window_s),
            breaker_cooldown_s=env_float(e, "HEDGEROW_BREAKER_COOLDOWN_S", d.breaker_cooldown_s),
            queue_max_depth=env_int(e, "HEDGEROW_QUEUE_MAX_DEPTH", d.queue_max_depth),
            queue_wait_s=env_float(e, "HEDGEROW_QUEUE_WAIT_S", d.queue_wait_s),
            near_tie_window_s=env_float(e, "HEDGEROW_NEAR_TIE_WINDOW_S", d.near_tie_window_s),
            default_max_tokens=env_int(
                e, "HEDGEROW_DEFAULT_MAX_TOKENS", d.default_max_tokens, minimum=1
            ),
            heartbeat_timeout_s=env_float(e, "HEDGEROW_OFFLINE_AFTER_S", d.heartbeat_timeout_s),
            reconnect_grace_s=env_float(e, "HEDGEROW_RECONNECT_GRACE_S", d.reconnect_grace_s),
        )
        return cls(
            host=env_str(e, "HEDGEROW_REGISTRY_HOST", cls.host),
            port=env_int(e, "HEDGEROW_REGISTRY_PORT", cls.port),
            metrics_port=env_int(e, "HEDGEROW_REGISTRY_METRICS_PORT", cls.metrics_port, minimum=-1),
            settings=settings,
            log_level=env_str(e, "HEDGEROW_LOG_LEVEL", cls.log_level),
            auth=ServiceAuth.from_env(e),
        )
