"""Registry domain values: request traits and the routing question (``Ask``), providers,
their models and loads, outcomes, and the settings every registry component reads its
limits from.

Everything here is an immutable value; the registry replaces a provider record instead of
mutating it, so a record handed out (to ``explain`` or a test) never changes under the
reader.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar

from contract.slots import RELEASE_CANCELLED, RELEASE_SUCCESS
from registry_svc.versions import Version, is_missing


class Shape(StrEnum):
    """Request shape the breaker is keyed by (A5)."""

    TOOLS = "tools"
    VISION = "vision"
    BASE = "base"


@dataclass(frozen=True, slots=True)
class Traits:
    """What a request needs from a provider (A5)."""

    has_tools: bool = False
    requires_vision: bool = False

    @property
    def shape(self) -> Shape:
        """``tools`` if has_tools, else ``vision`` if requires_vision, else ``base``."""
        if self.has_tools:
            return Shape.TOOLS
        if self.requires_vision:
            return Shape.VISION
        return Shape.BASE


@dataclass(frozen=True, slots=True)
class Ask:
    """One request's routing question: who may serve it, and with what preferences.

    The registry's public argument to ``explain``, ``reserve``, ``reserve_now`` and
    ``select``. ``exclude`` holds provider ids not to use (this request's earlier attempts);
    ``allowlist`` the provider serials allowed (None: any); ``avoid_version`` a binary
    version to avoid if another is eligible (B10, soft). ``prompt_tokens`` and ``max_tokens``
    size the request (C5 cost, context fit); ``max_tokens`` 0 means not given, and the
    registry estimates with ``RegistrySettings.default_max_tokens``. ``may_queue``: the
    request's first Reserve, its admission, may wait in the queue; retries never do (B11).
    ``reservation_id`` (optional, unique per call) names the reservation, so a caller that
    lost the reply can still release it (B12).

    Values arrive the way the wire leaves them unset, and are normalised here: an empty
    allowlist, an empty ``avoid_version`` or ``reservation_id`` mean none, and negative
    token counts mean 0.
    """

    model_id: str
    traits: Traits = Traits()
    exclude: frozenset[str] = frozenset()
    allowlist: frozenset[str] | None = None
    avoid_version: str | None = None
    prompt_tokens: int = 0
    max_tokens: int = 0
    may_queue: bool = True
    reservation_id: str | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalised once, here
        if self.allowlist == frozenset():
            put(self, "allowlist", None)
        if self.avoid_version == "":
            put(self, "avoid_version", None)
        if self.reservation_id == "":
            put(self, "reservation_id", None)
        if self.prompt_tokens < 0:
            put(self, "prompt_tokens", 0)
        if self.max_tokens < 0:
            put(self, "max_tokens", 0)

    def settled(self, default_max_tokens: int) -> Ask:
        """This ask with ``max_tokens`` estimated as ``default_max_tokens`` when not given:
        the form every registry decision reads."""
        return self if self.max_tokens else replace(self, max_tokens=default_max_tokens)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model as a provider advertises it (E1).

    The template verdicts are tri-state (C2): ``None`` = unknown (allowed), ``True``,
    ``False``. ``template_render_ok=False`` fences every shape; ``cap_tools=False`` fences
    tools requests and ``cap_vision=False`` vision requests. ``cap_system`` is informational
    (the provider folds system text itself). ``max_concurrency`` bounds the registry's
    slots for this (provider, model); ``max_context_tokens`` (``None`` = unknown, fits
    anything) makes requests larger than it ``too_large``.
    """

    id: str
    is_vision: bool = False
    template_render_ok: bool | None = None
    cap_system: bool | None = None
    cap_tools: bool | None = None
    cap_vision: bool | None = None
    max_concurrency: int = 1
    max_context_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_concurrency < 0:
            raise ValueError(f"max_concurrency must be >= 0, got {self.max_concurrency}")


@dataclass(frozen=True, slots=True)
class ModelLoad:
    """A provider's heartbeat report for one model (inputs of the C5 cost).

    ``running``: requests decoding in the engine; ``waiting``: requests queued inside the
    provider (C5 "queue depth"); ``backlog_tokens``: tokens still to generate ahead of a new
    request; ``loaded``: the model is resident (a cold model costs ``cold_model_penalty_s``).
    What the provider says of itself: the wire clamps it (``wire.loads_from``); what the
    registry believes of its rate is measured (``speed.SpeedBook``).
    """

    running: int = 0
    waiting: int = 0
    backlog_tokens: int = 0
    loaded: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class Provider:
    """One provider as the registry knows it.

    ``serial`` is the stable identity allowlists name (defaults to ``id``). ``trusted``
    defaults to False: a provider is routable only once the dispatcher says its challenge
    passed (F1). ``last_seen`` and ``registration`` are set by the registry, whatever the
    caller passes. ``decode_tps``/``prefill_tps`` are the advertised rates (0 = unknown).
    ``session`` names the link session that registered it (opaque; "" = none): an upsert
    naming the same session is an update of this registration, not a new one (C4).
    """

    id: str
    version: str = ""
    models: Mapping[str, ModelInfo] = field(default_factory=dict)
    serial: str = ""
    online: bool = True
    trusted: bool = False
    decode_tps: float = 0.0
    prefill_tps: float = 0.0
    loads: Mapping[str, ModelLoad] = field(default_factory=dict)
    last_seen: float = 0.0
    registration: int = 0
    session: str = ""
    parsed_version: Version | None = field(init=False, repr=False)
    memo: dict[Hashable, Any] = field(init=False, repr=False, default_factory=dict)
    """Values derived from this record by the hot path (static gate verdicts, cost terms).
    Safe to cache because a record never changes; a changed provider is a new record."""

    def __post_init__(self) -> None:
        if not self.serial:
            object.__setattr__(self, "serial", self.id)
        parsed = None if is_missing(self.version) else Version(self.version)
        object.__setattr__(self, "parsed_version", parsed)

    def load(self, model_id: str) -> ModelLoad:
        """The last reported load for ``model_id`` (an idle load if none was reported)."""
        return self.loads.get(model_id, IDLE_LOAD)


IDLE_LOAD = ModelLoad()
"""The load assumed for a model with no heartbeat report."""


@dataclass(frozen=True, slots=True)
class SpeedSample:
    """What one attempt measured of its provider (C5, ``speed.SpeedBook``). ``ttft_s`` None:
    no first-content sample (the attempt ended before it could tell, or was a cold load).
    ``no_content``: ``ttft_s`` is a lower bound, the attempt had no first content within it
    (it stalled, or lost the race after the race point). ``decode_tps`` 0: not measured.
    Taken as given; the wire clamps them (``wire.speed_from``)."""

    ttft_s: float | None = None
    no_content: bool = False
    decode_tps: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a reserved attempt ended, as fed to ``Registry.release``.

    ``status_code`` 200 = success (only a provider ``Complete``); 0 = cancelled (neutral:
    frees the slot, never touches the breaker); any other code is the provider's error
    (counted by the breaker when it is one of the counted codes). ``shape`` overrides the
    reservation's shape when given. ``speed``: what the attempt measured of its provider
    (C5), whatever the status.
    """

    status_code: int
    shape: Shape | None = None
    speed: SpeedSample | None = None

    SUCCESS: ClassVar[int] = RELEASE_SUCCESS
    CANCELLED: ClassVar[int] = RELEASE_CANCELLED


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """Every registry limit; defaults are the constants of docs/behavior.md.

    Not from docs/behavior.md (local choices): ``cold_model_penalty_s`` (cost of a model that is
    not resident), ``unknown_tps`` (rate assumed when a provider reports none, chosen
    pessimistic so unmeasured providers are picked last).

    Measured speed (C5, ``speed.SpeedBook``): an estimate is used once it has
    ``speed_min_samples`` samples, each new sample weighs ``speed_weight``, an estimate with
    no sample for ``speed_ttl_s`` is forgotten, and at most ``speed_max_entries`` are kept.
    Replies that grow with the fleet are capped: ``list_models_max`` models,
    ``explain_max_rows`` Explain rows, ``listed_providers_max`` ids in Stats.
    """

    tools_version_floor: str = "0.6.3"
    breaker_counted_codes: frozenset[int] = frozenset({500, 502, 504})
    breaker_threshold: int = 2
    breaker_window_s: float = 60.0
    breaker_cooldown_s: float = 300.0
    queue_max_depth: int = 10
    queue_wait_s: float = 120.0
    near_tie_window_s: float = 3.0
    queue_depth_cost_s: float = 3.0
    pending_cost_s: float = 0.75
    tps_load_factor: float = 0.27
    cold_model_penalty_s: float = 30.0
    unknown_tps: float = 1.0
    default_max_tokens: int = 256
    heartbeat_timeout_s: float = 15.0
    reconnect_grace_s: float = 60.0
    retry_after_empty_s: int = 2
    retry_after_per_waiter_s: int = 3
    retry_after_min_s: int = 2
    retry_after_max_s: int = 30
    released_early_ttl_s: float = 300.0  # how long a release-before-grant is remembered
    released_early_max: int = 100_000
    speed_min_samples: int = 3
    speed_weight: float = 0.25
    speed_ttl_s: float = 600.0
    speed_max_entries: int = 100_000
    list_models_max: int = 1000
    explain_max_rows: int = 200
    listed_providers_max: int = 1000

    def __post_init__(self) -> None:
        positive = {
            "breaker_threshold": self.breaker_threshold,
            "breaker_window_s": self.breaker_window_s,
            "breaker_cooldown_s": self.breaker_cooldown_s,
            "unknown_tps": self.unknown_tps,
            "heartbeat_timeout_s": self.heartbeat_timeout_s,
            "speed_min_samples": self.speed_min_samples,
            "speed_ttl_s": self.speed_ttl_s,
            "speed_max_entries": self.speed_max_entries,
            "list_models_max": self.list_models_max,
            "explain_max_rows": self.explain_max_rows,
            "listed_providers_max": self.listed_providers_max,
        }
        non_negative = {
            "queue_max_depth": self.queue_max_depth,
            "queue_wait_s": self.queue_wait_s,
            "near_tie_window_s": self.near_tie_window_s,
            "queue_depth_cost_s": self.queue_depth_cost_s,
            "pending_cost_s": self.pending_cost_s,
            "tps_load_factor": self.tps_load_factor,
            "cold_model_penalty_s": self.cold_model_penalty_s,
            "default_max_tokens": self.default_max_tokens,
            "reconnect_grace_s": self.reconnect_grace_s,
            "retry_after_empty_s": self.retry_after_empty_s,
            "retry_after_per_waiter_s": self.retry_after_per_waiter_s,
            "retry_after_min_s": self.retry_after_min_s,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be > 0, got {value}")
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not 0 < self.speed_weight <= 1:
            raise ValueError(f"speed_weight must be in (0, 1], got {self.speed_weight}")
        if self.retry_after_max_s < self.retry_after_min_s:
            raise ValueError("retry_after_max_s must be >= retry_after_min_s")
        if not self.tools_version_floor.strip():
            raise ValueError("tools_version_floor must not be empty")
