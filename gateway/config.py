"""Gateway settings, read once from `HEDGEROW_*` env at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.ratelimit import parse_limits
from svckit.auth import ServiceAuth, secrets_from_env
from svckit.env import ConfigError, env_float, env_int, env_str

DEFAULT_PORT = 8080
DEV_API_KEY = "hedgerow-dev-key"


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_keys: tuple[str, ...] = (DEV_API_KEY,)
    normalizer_addr: str = "127.0.0.1:50061"
    registry_addr: str = "127.0.0.1:50062"
    dispatcher_addr: str = "127.0.0.1:50063"
    max_body_bytes: int = 16 * 1024 * 1024
    normalize_timeout_s: float = 0.25
    registry_timeout_s: float = 2.0
    default_max_tokens: int = 256
    rate_limit_rps: float = 0.0  # per API key; 0 = unlimited
    rate_limit_burst: float = 20.0
    key_rate_limits: str = ""  # per-key overrides: "key=RATE/BURST,..."
    log_level: str = "info"
    auth: ServiceAuth = field(default_factory=ServiceAuth)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        e = os.environ if env is None else env
        config = cls(
            host=env_str(e, "HEDGEROW_GATEWAY_HOST", cls.host),
            port=env_int(e, "HEDGEROW_GATEWAY_PORT", cls.port),
            api_keys=secrets_from_env(e, "HEDGEROW_API_KEYS", (DEV_API_KEY,)),
            normalizer_addr=env_str(e, "HEDGEROW_NORMALIZER_ADDR", cls.normalizer_addr),
            registry_addr=env_str(e, "HEDGEROW_REGISTRY_ADDR", cls.registry_addr),
            dispatcher_addr=env_str(e, "HEDGEROW_DISPATCHER_ADDR", cls.dispatcher_addr),
            max_body_bytes=env_int(e, "HEDGEROW_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024),
            normalize_timeout_s=env_float(
                e, "HEDGEROW_NORMALIZE_TIMEOUT_S", cls.normalize_timeout_s
            ),
            registry_timeout_s=env_float(
                e, "HEDGEROW_GATEWAY_REGISTRY_TIMEOUT_S", cls.registry_timeout_s
            ),
            default_max_tokens=env_int(
                e, "HEDGEROW_DEFAULT_MAX_TOKENS", cls.default_max_tokens, minimum=1
            ),
            rate_limit_rps=env_float(e, "HEDGEROW_RATE_LIMIT_RPS", cls.rate_limit_rps),
            rate_limit_burst=env_float(
                e, "HEDGEROW_RATE_LIMIT_BURST", cls.rate_limit_burst, minimum=1
            ),
            key_rate_limits=env_str(e, "HEDGEROW_KEY_RATE_LIMITS", cls.key_rate_limits),
            log_level=env_str(e, "HEDGEROW_LOG_LEVEL", cls.log_level),
            auth=ServiceAuth.from_env(e),
        )
        try:
            parse_limits(config.key_rate_limits)
        except ValueError as exc:
            raise ConfigError(f"HEDGEROW_KEY_RATE_LIMITS: {exc}") from exc
        if not config.api_keys:
            raise ConfigError("HEDGEROW_API_KEYS must name at least one key")
        return config
