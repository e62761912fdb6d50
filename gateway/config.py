"""Gateway settings, read once from `HEDGEROW_*` env at start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.limits import EdgeLimits
from gateway.ratelimit import parse_concurrency, parse_limits
from svckit.auth import ServiceAuth, dev_mode, secrets_from_env
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
    # Per API key (A11); 0 = unlimited. Dev mode's default is 0: the local stack, the tests
    # and the benchmarks drive hundreds of requests a second with the one dev key.
    rate_limit_rps: float = 50.0
    rate_limit_burst: float = 100.0
    key_rate_limits: str = ""  # per-key overrides: "key=RATE/BURST,..."
    key_concurrency: int = 32  # requests in flight per API key; 0 = unlimited (A14)
    key_concurrency_limits: str = ""  # per-key overrides: "key=N,..."
    max_connections: int = 1000  # the edge's limits (A12, gateway.limits)
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    body_timeout_s: float = 300.0
    max_header_bytes: int = 64 * 1024
    max_listed_models: int = 1000  # /v1/models lists at most this many (A17)
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
            rate_limit_rps=env_float(
                e, "HEDGEROW_RATE_LIMIT_RPS", 0.0 if dev_mode(e) else cls.rate_limit_rps
            ),
            rate_limit_burst=env_float(
                e, "HEDGEROW_RATE_LIMIT_BURST", cls.rate_limit_burst, minimum=1
            ),
            key_rate_limits=env_str(e, "HEDGEROW_KEY_RATE_LIMITS", cls.key_rate_limits),
            key_concurrency=env_int(e, "HEDGEROW_KEY_CONCURRENCY", cls.key_concurrency),
            key_concurrency_limits=env_str(
                e, "HEDGEROW_KEY_CONCURRENCY_LIMITS", cls.key_concurrency_limits
            ),
            max_connections=env_int(e, "HEDGEROW_MAX_CONNECTIONS", cls.max_connections, minimum=1),
            header_timeout_s=env_float(
                e, "HEDGEROW_HEADER_TIMEOUT_S", cls.header_timeout_s, minimum=0.1
            ),
            body_idle_timeout_s=env_float(
                e, "HEDGEROW_BODY_IDLE_TIMEOUT_S", cls.body_idle_timeout_s, minimum=0.1
            ),
            body_timeout_s=env_float(e, "HEDGEROW_BODY_TIMEOUT_S", cls.body_timeout_s, minimum=0.1),
            max_header_bytes=env_int(
                e, "HEDGEROW_MAX_HEADER_BYTES", cls.max_header_bytes, minimum=1024
            ),
            max_listed_models=env_int(
                e, "HEDGEROW_MAX_LISTED_MODELS", cls.max_listed_models, minimum=1
            ),
            log_level=env_str(e, "HEDGEROW_LOG_LEVEL", cls.log_level),
            auth=ServiceAuth.from_env(e),
        )
        try:
            parse_limits(config.key_rate_limits)
        except ValueError as exc:
            raise ConfigError(f"HEDGEROW_KEY_RATE_LIMITS: {exc}") from exc
        try:
            parse_concurrency(config.key_concurrency_limits)
        except ValueError as exc:
            raise ConfigError(f"HEDGEROW_KEY_CONCURRENCY_LIMITS: {exc}") from exc
        if not config.api_keys:
            raise ConfigError("HEDGEROW_API_KEYS must name at least one key")
        return config

    @property
    def edge_limits(self) -> EdgeLimits:
        return EdgeLimits(
            max_connections=self.max_connections,
            header_timeout_s=self.header_timeout_s,
            body_idle_timeout_s=self.body_idle_timeout_s,
            body_timeout_s=self.body_timeout_s,
            max_header_bytes=self.max_header_bytes,
        )
