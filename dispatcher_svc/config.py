"""Dispatcher settings, read once from `HEDGEROW_*` env at start (defaults: docs/settings.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from contract.link import (
    MAX_CHUNK_BYTES,
    MAX_FRAME_BYTES,
    MAX_HARDWARE_CHARS,
    MAX_MODEL_CONCURRENCY,
    MAX_MODEL_ID_CHARS,
    MAX_MODELS_PER_PROVIDER,
    MAX_PROVIDER_ID_CHARS,
    MAX_REGISTER_BYTES,
    MAX_VERSION_CHARS,
)
from svckit.auth import ServiceAuth, secrets_from_env
from svckit.env import ConfigError, env_float, env_int, env_str
from svckit.grpcserver import MAX_MESSAGE_BYTES

DEFAULT_PORT = 50063
DEFAULT_METRICS_PORT = 9163
DEFAULT_LINK_PORT = 8765
DEFAULT_REGISTRY_ADDR = "127.0.0.1:50062"
DEV_ENROLLMENT_TOKEN = "hedgerow-dev-enrollment"


@dataclass(frozen=True)
class LinkLimits:
    """What the link accepts from providers (rules F4-F8; defaults: docs/settings.md). Every
    provider is a stranger: these bound what one provider, token or host can make the
    dispatcher hold, forward or believe."""

    # F4: text formats, counts and numbers of Register / Heartbeat / ModelsUpdate.
    max_provider_id_chars: int = MAX_PROVIDER_ID_CHARS
    max_model_id_chars: int = MAX_MODEL_ID_CHARS
    max_version_chars: int = MAX_VERSION_CHARS
    max_hardware_chars: int = MAX_HARDWARE_CHARS
    max_models_per_provider: int = MAX_MODELS_PER_PROVIDER
    max_model_concurrency: int = MAX_MODEL_CONCURRENCY
    max_reported_waiting: int = 4096
    max_decode_tps: float = 10_000.0
    max_prefill_tps: float = 100_000.0
    max_error_chars: int = 1024
    # F5: a provider id stays bound to its key this long after it was last seen.
    id_binding_ttl_s: float = 86_400.0
    max_ids_per_token: int = 1024
    # F6: per enrollment token.
    max_links_per_token: int = 64
    max_models_per_token: int = 256
    # F7: before the challenge is passed.
    max_register_bytes: int = MAX_REGISTER_BYTES
    max_pending_handshakes: int = 64
    max_pending_handshakes_per_addr: int = 8
    handshake_timeout_s: float = 10.0
    # F8: chunks.
    max_chunk_bytes: int = MAX_CHUNK_BYTES

    @classmethod
    def from_env(cls, e: Mapping[str, str]) -> LinkLimits:
        return cls(
            max_provider_id_chars=env_int(
                e, "HEDGEROW_MAX_PROVIDER_ID_CHARS", cls.max_provider_id_chars, minimum=1
            ),
            max_model_id_chars=env_int(
                e, "HEDGEROW_MAX_MODEL_ID_CHARS", cls.max_model_id_chars, minimum=1
            ),
            max_version_chars=env_int(
                e, "HEDGEROW_MAX_VERSION_CHARS", cls.max_version_chars, minimum=1
            ),
            max_hardware_chars=env_int(e, "HEDGEROW_MAX_HARDWARE_CHARS", cls.max_hardware_chars),
            max_models_per_provider=env_int(
                e, "HEDGEROW_MAX_MODELS_PER_PROVIDER", cls.max_models_per_provider, minimum=1
            ),
            max_model_concurrency=env_int(
                e, "HEDGEROW_MAX_MODEL_CONCURRENCY", cls.max_model_concurrency, minimum=1
            ),
            max_reported_waiting=env_int(
                e, "HEDGEROW_MAX_REPORTED_WAITING", cls.max_reported_waiting
            ),
            max_decode_tps=env_float(e, "HEDGEROW_MAX_DECODE_TPS", cls.max_decode_tps),
            max_prefill_tps=env_float(e, "HEDGEROW_MAX_PREFILL_TPS", cls.max_prefill_tps),
            max_error_chars=env_int(e, "HEDGEROW_MAX_ERROR_CHARS", cls.max_error_chars, minimum=16),
            id_binding_ttl_s=env_float(e, "HEDGEROW_ID_BINDING_TTL_S", cls.id_binding_ttl_s),
            max_ids_per_token=env_int(
                e, "HEDGEROW_MAX_IDS_PER_TOKEN", cls.max_ids_per_token, minimum=1
            ),
            max_links_per_token=env_int(
                e, "HEDGEROW_MAX_LINKS_PER_TOKEN", cls.max_links_per_token, minimum=1
            ),
            max_models_per_token=env_int(
                e, "HEDGEROW_MAX_MODELS_PER_TOKEN", cls.max_models_per_token, minimum=1
            ),
            max_register_bytes=env_int(
                e, "HEDGEROW_MAX_REGISTER_BYTES", cls.max_register_bytes, minimum=1024
            ),
            max_pending_handshakes=env_int(
                e, "HEDGEROW_MAX_PENDING_HANDSHAKES", cls.max_pending_handshakes, minimum=1
            ),
            max_pending_handshakes_per_addr=env_int(
                e,
                "HEDGEROW_MAX_PENDING_HANDSHAKES_PER_ADDR",
                cls.max_pending_handshakes_per_addr,
                minimum=1,
            ),
            handshake_timeout_s=env_float(
                e, "HEDGEROW_HANDSHAKE_TIMEOUT_S", cls.handshake_timeout_s, minimum=0.001
            ),
            max_chunk_bytes=env_int(
                e, "HEDGEROW_MAX_CHUNK_BYTES", cls.max_chunk_bytes, minimum=1024
            ),
        )


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
    # Budget of one `Dispatches` message: a step's events are split to fit (a chunk larger
    # fails its own request), far under the gRPC limit of the stream every request shares.
    dispatch_message_bytes: int = 1024 * 1024
    log_level: str = "info"
    auth: ServiceAuth = field(default_factory=ServiceAuth)
    limits: LinkLimits = field(default_factory=LinkLimits)

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
            dispatch_message_bytes=env_int(
                e, "HEDGEROW_DISPATCH_MESSAGE_BYTES", cls.dispatch_message_bytes, minimum=65536
            ),
            log_level=env_str(e, "HEDGEROW_LOG_LEVEL", cls.log_level),
            auth=ServiceAuth.from_env(e),
            limits=LinkLimits.from_env(e),
        )
        if not config.enrollment_tokens:
            raise ConfigError("HEDGEROW_ENROLLMENT_TOKENS must name at least one token")
        if config.offline_after_s <= config.heartbeat_interval_s:
            raise ConfigError("HEDGEROW_OFFLINE_AFTER_S must exceed the heartbeat interval")
        if config.limits.max_register_bytes > config.max_frame_bytes:
            raise ConfigError(
                "HEDGEROW_MAX_REGISTER_BYTES must not exceed HEDGEROW_MAX_FRAME_BYTES"
            )
        if config.dispatch_message_bytes > MAX_MESSAGE_BYTES // 4:
            raise ConfigError(
                f"HEDGEROW_DISPATCH_MESSAGE_BYTES must be at most {MAX_MESSAGE_BYTES // 4}"
            )
        if config.limits.max_chunk_bytes >= config.max_frame_bytes:
            raise ConfigError("HEDGEROW_MAX_CHUNK_BYTES must be below HEDGEROW_MAX_FRAME_BYTES")
        return config
