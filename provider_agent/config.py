"""Provider agent settings: flags first, then `HEDGEROW_*` env, then defaults."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contract.link import (
    MAX_HARDWARE_CHARS,
    MAX_MODEL_CONCURRENCY,
    MAX_PROVIDER_ID_CHARS,
    MAX_VERSION_CHARS,
    is_label,
    is_name,
)
from provider_agent import __version__
from provider_agent.keyfile import default_key_file
from svckit.env import ConfigError, env_float, env_int, env_list, env_str

ENGINES = ("sim", "openai")


@dataclass(frozen=True)
class SimSettings:
    """The built-in simulated engine (rule E5)."""

    ttft_s: float = 0.05
    tokens_per_s: float = 200.0
    default_max_tokens: int = 32
    faults: tuple[str, ...] = ()  # provider-wide faults, e.g. "error_before_content"
    fault_after_chunks: int = 2  # content chunks before error_after_content fires
    slow_start_s: float = 2.0
    cold_load_s: float = 0.0  # > 0: first request per model sends Accepted and loads


@dataclass(frozen=True)
class AgentConfig:
    dispatcher_url: str = "ws://127.0.0.1:8765"
    token: str = "hedgerow-dev-enrollment"
    model_dir: Path = Path("models")
    provider_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # The long-term key's file (F5): the identity the dispatcher binds the id to.
    key_file: Path = field(default_factory=lambda: default_key_file(os.environ))
    version: str = __version__
    engine: str = "sim"
    upstream_url: str = ""
    upstream_api_key: str = ""
    upstream_timeout_s: float = 600.0  # read timeout between upstream bytes (inference_timeout)
    max_concurrency: int = 4
    decode_tps: float = 200.0
    prefill_tps: float = 2000.0
    hardware: str = "cpu"
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    heartbeat_interval_s: float = 5.0
    template_strictness: str = "strict"
    sim: SimSettings = SimSettings()
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> AgentConfig:
        e = os.environ if env is None else env
        sim = SimSettings(
            ttft_s=env_float(e, "HEDGEROW_SIM_TTFT_S", SimSettings.ttft_s),
            tokens_per_s=env_float(
                e, "HEDGEROW_SIM_TOKENS_PER_S", SimSettings.tokens_per_s, minimum=0.001
            ),
            default_max_tokens=env_int(
                e, "HEDGEROW_SIM_MAX_TOKENS", SimSettings.default_max_tokens, minimum=1
            ),
            faults=env_list(e, "HEDGEROW_SIM_FAULTS"),
            fault_after_chunks=env_int(
                e, "HEDGEROW_SIM_FAULT_AFTER_CHUNKS", SimSettings.fault_after_chunks
            ),
            slow_start_s=env_float(e, "HEDGEROW_SIM_SLOW_START_S", SimSettings.slow_start_s),
            cold_load_s=env_float(e, "HEDGEROW_SIM_COLD_LOAD_S", SimSettings.cold_load_s),
        )
        values: dict[str, object] = dict(
            dispatcher_url=env_str(e, "HEDGEROW_DISPATCHER_URL", cls.dispatcher_url),
            token=env_str(e, "HEDGEROW_ENROLLMENT_TOKEN", cls.token),
            model_dir=Path(env_str(e, "HEDGEROW_MODEL_DIR", str(cls.model_dir))),
            provider_id=env_str(e, "HEDGEROW_PROVIDER_ID", f"{socket.gethostname()}-{os.getpid()}"),
            key_file=Path(env_str(e, "HEDGEROW_KEY_FILE", str(default_key_file(e)))),
            version=env_str(e, "HEDGEROW_PROVIDER_VERSION", cls.version),
            engine=env_str(e, "HEDGEROW_ENGINE", cls.engine),
            upstream_url=env_str(e, "HEDGEROW_UPSTREAM_URL", cls.upstream_url),
            upstream_api_key=env_str(e, "HEDGEROW_UPSTREAM_API_KEY", cls.upstream_api_key),
            upstream_timeout_s=env_float(
                e, "HEDGEROW_UPSTREAM_TIMEOUT_S", cls.upstream_timeout_s, minimum=0.001
            ),
            max_concurrency=env_int(e, "HEDGEROW_MAX_CONCURRENCY", cls.max_concurrency, minimum=1),
            decode_tps=env_float(e, "HEDGEROW_DECODE_TPS", cls.decode_tps),
            prefill_tps=env_float(e, "HEDGEROW_PREFILL_TPS", cls.prefill_tps),
            hardware=env_str(e, "HEDGEROW_HARDWARE", cls.hardware),
            reconnect_min_s=env_float(e, "HEDGEROW_RECONNECT_MIN_S", cls.reconnect_min_s),
            reconnect_max_s=env_float(e, "HEDGEROW_RECONNECT_MAX_S", cls.reconnect_max_s),
            heartbeat_interval_s=env_float(
                e, "HEDGEROW_HEARTBEAT_INTERVAL_S", cls.heartbeat_interval_s
            ),
            template_strictness=env_str(e, "HEDGEROW_TEMPLATE_STRICTNESS", cls.template_strictness),
            sim=sim,
            log_level=env_str(e, "HEDGEROW_LOG_LEVEL", cls.log_level),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)  # type: ignore[arg-type]
        config.validate()
        return config

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {ENGINES}, not {self.engine!r}")
        if self.engine == "openai" and not self.upstream_url:
            raise ConfigError("the openai engine needs --upstream URL")
        if self.upstream_url and not self.upstream_url.startswith(("http://", "https://")):
            raise ConfigError("upstream URL must be http:// or https://")
        if not 1 <= self.max_concurrency <= MAX_MODEL_CONCURRENCY:
            raise ConfigError(f"max concurrency must be 1-{MAX_MODEL_CONCURRENCY}")
        # The dispatcher refuses a Register whose text breaks these formats (F4): say so
        # here, at start, rather than be refused at every reconnect.
        if not is_name(self.provider_id, MAX_PROVIDER_ID_CHARS):
            raise ConfigError(
                f"provider id must be 1-{MAX_PROVIDER_ID_CHARS} printable ASCII characters "
                f"without spaces, not {self.provider_id!r}"
            )
        if not is_name(self.version, MAX_VERSION_CHARS, required=False):
            raise ConfigError(
                f"provider version must be at most {MAX_VERSION_CHARS} printable ASCII "
                f"characters without spaces, not {self.version!r}"
            )
        if not is_label(self.hardware, MAX_HARDWARE_CHARS):
            raise ConfigError(
                f"hardware must be at most {MAX_HARDWARE_CHARS} printable ASCII characters"
            )
        if self.reconnect_min_s <= 0 or self.reconnect_max_s < self.reconnect_min_s:
            raise ConfigError("reconnect backoff needs 0 < min <= max")
        if self.heartbeat_interval_s <= 0:
            raise ConfigError("heartbeat interval must be positive")
        if not self.dispatcher_url.startswith(("ws://", "wss://")):
            raise ConfigError("dispatcher URL must be ws:// or wss://")
        if self.template_strictness not in ("strict", "lenient"):
            raise ConfigError("template strictness must be strict or lenient")
