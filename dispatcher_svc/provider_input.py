"""Everything a provider reports, validated and clamped before anything else sees it (F4, F8).

Pure: no I/O, no clock. A provider is a stranger's machine and may lie about anything, so
nothing here trusts a figure or a string:

- **Text** that reaches response headers, logs and client listings (provider id, version,
  hardware, model ids) must be short printable ASCII (`contract.link.is_name`/`is_label`);
  anything else refuses the frame that carried it (`InputRefused`). Never "cleaned": a
  changed id would be someone else's.
- **Counts** (models per provider, loads per heartbeat) are capped; over the cap refuses.
- **Numbers** are clamped into sane ranges (NaN counts as 0): they only steer routing, and
  a clamped lie is harmless where a refused heartbeat would cost an honest provider its
  liveness over a rounding quirk.
- **Copies**: every message handed on is built fresh from known fields, so unknown protobuf
  fields a provider smuggles in never travel on to the registry.

Who refuses what: a refused `Register` closes the connection with CLOSE_PROTOCOL and the
reason; a refused `Heartbeat` or `ModelsUpdate` closes the session the same way (F3).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.link import SEAL_OVERHEAD_BYTES, is_label, is_name
from contract.sealing import KEY_BYTES
from dispatcher_svc.config import LinkLimits

# Token counts a provider reports in `Complete` are clamped to this (int32 range): they are
# shown to clients and logged, never trusted for anything larger.
MAX_USAGE_TOKENS = 2**31 - 1
# The status of a provider's `Error` frame when it names no HTTP error status (B11 feeds it
# to the breaker): a provider that cannot say what went wrong is a bad gateway.
BAD_GATEWAY = 502


class InputRefused(ValueError):
    """A provider's frame breaks a format or a cap; `reason` fits a close frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProviderProfile:
    """A `Register` that passed F4: every field within its format, every number clamped."""

    provider_id: str
    version: str
    hardware: str
    public_key: bytes
    models: tuple[common_pb2.ModelInfo, ...]
    decode_tps: float
    prefill_tps: float


def clamp_float(value: float, high: float) -> float:
    """`value` within [0, high]; NaN is 0 (unknown), +inf is `high`."""
    if math.isnan(value) or value <= 0.0:
        return 0.0
    return min(value, high)


def clamp_int(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def check_register(register: link_pb2.Register, limits: LinkLimits) -> ProviderProfile:
    """The profile a `Register` describes, or `InputRefused` naming the first bad field.
    (The enrollment token is the handshake's business, checked before this.)"""
    if not is_name(register.provider_id, limits.max_provider_id_chars):
        raise InputRefused(
            f"provider_id must be 1-{limits.max_provider_id_chars} printable ASCII characters"
        )
    if not is_name(register.version, limits.max_version_chars, required=False):
        raise InputRefused(
            f"version must be at most {limits.max_version_chars} printable ASCII characters"
        )
    if not is_label(register.hardware, limits.max_hardware_chars):
        raise InputRefused(
            f"hardware must be at most {limits.max_hardware_chars} printable ASCII characters"
        )
    if len(register.public_key) != KEY_BYTES:
        raise InputRefused(f"public_key must be {KEY_BYTES} bytes")
    return ProviderProfile(
        provider_id=register.provider_id,
        version=register.version,
        hardware=register.hardware,
        public_key=bytes(register.public_key),
        models=tuple(check_models(register.models, limits)),
        decode_tps=clamp_float(register.decode_tps, limits.max_decode_tps),
        prefill_tps=clamp_float(register.prefill_tps, limits.max_prefill_tps),
    )


def check_models(
    models: Sequence[common_pb2.ModelInfo], limits: LinkLimits
) -> list[common_pb2.ModelInfo]:
    """Fresh copies of a provider's model list (`Register` or `ModelsUpdate`): at most
    `max_models_per_provider`, ids unique and within format, `max_concurrency` in
    [1, max_model_concurrency] (0 or negative is 1: an honest agent always says)."""
    if len(models) > limits.max_models_per_provider:
        raise InputRefused(
            f"{len(models)} models is over the cap of {limits.max_models_per_provider}"
        )
    out: list[common_pb2.ModelInfo] = []
    seen: set[str] = set()
    for n, model in enumerate(models):
        if not is_name(model.id, limits.max_model_id_chars):
            raise InputRefused(
                f"model #{n}: id must be 1-{limits.max_model_id_chars} printable ASCII characters"
            )
        if model.id in seen:
            raise InputRefused(f"model #{n}: duplicate id")
        seen.add(model.id)
        copy = common_pb2.ModelInfo(
            id=model.id,
            is_vision=model.is_vision,
            max_concurrency=clamp_int(model.max_concurrency, 1, limits.max_model_concurrency),
        )
        # Tri-state flags (C2): absent stays absent.
        for flag in ("template_render_ok", "cap_system", "cap_tools", "cap_vision"):
            if model.HasField(flag):
                setattr(copy, flag, getattr(model, flag))
        out.append(copy)
    return out


def clamp_loads(
    loads: Sequence[link_pb2.ModelLoad], served: Collection[str], limits: LinkLimits
) -> list[link_pb2.ModelLoad]:
    """A heartbeat's loads as the registry may see them: only models this provider
    registered (the first entry of each), `running` in [0, max_model_concurrency],
    `waiting` in [0, max_reported_waiting], `max_concurrency` 0 (unchanged) or in
    [1, max_model_concurrency]. More entries than `max_models_per_provider` refuses the
    heartbeat: an honest agent sends one per model."""
    if len(loads) > limits.max_models_per_provider:
        raise InputRefused(
            f"{len(loads)} loads is over the cap of {limits.max_models_per_provider}"
        )
    out: list[link_pb2.ModelLoad] = []
    seen: set[str] = set()
    for load in loads:
        if load.model not in served or load.model in seen:
            continue
        seen.add(load.model)
        limit = load.max_concurrency
        out.append(
            link_pb2.ModelLoad(
                model=load.model,
                running=clamp_int(load.running, 0, limits.max_model_concurrency),
                waiting=clamp_int(load.waiting, 0, limits.max_reported_waiting),
                max_concurrency=0
                if limit == 0
                else clamp_int(limit, 1, limits.max_model_concurrency),
            )
        )
    return out


def clamp_error(status: int, message: str, limits: LinkLimits) -> tuple[int, str]:
    """A provider's `Error` frame as the dispatch machine may see it: an HTTP error status
    (400-599; anything else is 502) and a message of at most `max_error_chars`, every
    non-printable character (CR, LF, ESC…) replaced by a space."""
    if not 400 <= status <= 599:
        status = BAD_GATEWAY
    text = message[: limits.max_error_chars]
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    return status, text


def clamp_usage(usage: common_pb2.Usage) -> common_pb2.Usage:
    """A provider's token counts within [0, MAX_USAGE_TOKENS]; the total is recomputed,
    never taken from the provider."""
    prompt = clamp_int(usage.prompt_tokens, 0, MAX_USAGE_TOKENS)
    completion = clamp_int(usage.completion_tokens, 0, MAX_USAGE_TOKENS)
    return common_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def chunk_refusal(sealed: Sequence[bytes], max_chunk_bytes: int) -> str | None:
    """Why a `Chunk` frame's sealed chunks break F8, or None: each chunk's plaintext, and
    all of them together, at most `max_chunk_bytes`. Decided on sizes alone, before any
    chunk is opened."""
    plaintext = [max(0, len(chunk) - SEAL_OVERHEAD_BYTES) for chunk in sealed]
    if sum(plaintext) > max_chunk_bytes:
        return f"chunk frame of {sum(plaintext)} bytes is over the link's {max_chunk_bytes}"
    return None


# A honest agent reports once per heartbeat interval; a provider may report up to this many
# times as often (a burst of `REPORT_BURST`) before reports are dropped.
REPORTS_PER_HEARTBEAT = 4
REPORT_BURST = 8


class ReportBudget:
    """How often a provider's heartbeats (and model updates) are passed on to the registry
    (F4): a token bucket of `burst` reports refilled at `rate_per_s`. Each report costs the
    registry a gRPC call, so a provider that floods heartbeats must not multiply that; one
    over budget still counts as alive (it arrived), its figures are just not forwarded."""

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def allow(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def report_budget(heartbeat_interval_s: float, now: float) -> ReportBudget:
    """The budget of one provider session (F4)."""
    return ReportBudget(REPORTS_PER_HEARTBEAT / heartbeat_interval_s, REPORT_BURST, now)
