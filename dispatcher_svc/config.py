"""Dispatcher settings, read once from `HEDGEROW_*` env at start (defaults: docs/settings.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from contract.link import MAX_FRAME_BYTES
from svckit.auth import ServiceAuth, secrets_from_env
from svckit.env import ConfigError, env_float, env_int, env_str

DEFAULT_PORT = 50063
DEFAULT_METRICS_PORT = 9163
DEFAULT_LINK_PORT = 8765
DEFAULT_REGISTRY_ADDR = "127.0.0.1:50062"
DEV_ENROLLMENT_TOKEN = "hedgerow-dev-enrollment"


@dataclass(frozen=True)
class DispatcherConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    link_host: str = "127.0.0.1"
    link_port: int = DEFAULT_LINK_PORT
    registry_addr: str = DEFAULT_REGISTRY_ADDR
    enrollment_tokens: tuple[str, ...] = (DEV_ENROLLMENT_TOKEN,)
    max_frame_bytes: int = MAX_FRAME_BYTES
    heartbeat_interval_s: float = 5.0
    offline_after_s: float = 15.0
    challenge_interval_s: float = 300.0
    challenge_timeout_s: float = 30.0
    # Dispatch budgets (docs/behavior.md constants).
    max_dispatch_attempts: int = 3
    ttft_base_s: float = 5.0
    ttft_per_token_s: float = 0.001
    speculative_ratio: float = 0.5
    preamble_content_timeout_s: float = 90.0
    inference_timeout_s: float = 600.0
    max_held_preamble: int = 8
    queue_wait_s: float = 120.0
    log_level: str = "info"
    auth: ServiceAuth = field(default_factory=ServiceAuth)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DispatcherConfig:
        e = os.environ if env is None else env
        config = cls(
            host=env_str(e, "HEDGEROW_DISPATCHER_HOST", cls.host),
            port=env_int(e, "HEDGEROW_DISPATCHER_PORT", cls.port),
            metrics_port=env_int(
                e, "HEDGEROW_DISPATCHER_METRICS_PORT", cls.metrics_port, minimum=-1
            ),
            link_host=env_str(e, "HEDGEROW_LINK_HOST", cls.link_host),
            link_port=env_int(e, "HEDGEROW_LINK_PORT", cls.link_port),
            registry_addr=env_str(e, "HEDGEROW_REGISTRY_ADDR", cls.registry_addr),
            enrollment_tokens=secrets_from_env(
                e, "HEDGEROW_ENROLLMENT_TOKENS", (DEV_ENROLLMENT_TOKEN,)
            ),
            max_frame_bytes=env_int(
                e, "HEDGEROW_MAX_FRAME_BYTES", cls.max_frame_bytes, minimum=1024
            ),
            heartbeat_interval_s=env_float(
                e, "HEDGEROW_HEARTBEAT_INTERVAL_S", cls.heartbeat_interval_s
            ),
            offline_after_s=env_float(e, "HEDGEROW_OFFLINE_AFTER_S", cls.offline_after_s),
            challenge_interval_s=env_float(
                e, "HEDGEROW_CHALLENGE_INTERVAL_S", cls.challenge_interval_s
            ),
            challenge_timeout_s=env_float(
                e, "HEDGEROW_CHALLENGE_TIMEOUT_S", cls.challenge_timeout_s
            ),
            max_dispatch_attempts=env_int(
                e, "HEDGEROW_MAX_DISPATCH_ATTEMPTS", cls.max_dispatch_attempts, minimum=1
            ),
            ttft_base_s=env_float(e, "HEDGEROW_TTFT_BASE_S", cls.ttft_base_s),
            ttft_per_token_s=env_float(e, "HEDGEROW_TTFT_PER_TOKEN_S", cls.ttft_per_token_s),
            speculative_ratio=env_float(e, "HEDGEROW_SPECULATIVE_RATIO", cls.speculative_ratio),
            preamble_content_timeout_s=env_float(
                e, "HEDGEROW_PREAMBLE_CONTENT_TIMEOUT_S", cls.preamble_content_timeout_s
            ),
            inference_timeout_s=env_float(
                e, "HEDGEROW_INFERENCE_TIMEOUT_S", cls.inference_timeout_s
            ),
            max_held_preamble=env_int(
                e, "HEDGEROW_MAX_HELD_PREAMBLE", cls.max_held_preamble, minimum=1
            ),
            queue_wait_s=env_float(e, "HEDGEROW_QUEUE_WAIT_S", cls.queue_wait_s),
            log_level=env_str(e, "HEDGEROW_LOG_LEVEL", cls.log_level),
            auth=ServiceAuth.from_env(e),
        )
        if not config.enrollment_tokens:
            raise ConfigError("HEDGEROW_ENROLLMENT_TOKENS must name at least one token")
        if config.offline_after_s <= config.heartbeat_interval_s:
            raise ConfigError("HEDGEROW_OFFLINE_AFTER_S must exceed the heartbeat interval")
        return config
