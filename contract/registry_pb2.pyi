from contract import hedgerow_common_pb2 as _hedgerow_common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderInfo(_message.Message):
    __slots__ = ("id", "serial", "version", "models", "trusted", "decode_tps", "prefill_tps", "hardware")
    ID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    DECODE_TPS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TPS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    id: str
    serial: str
    version: str
    models: _containers.RepeatedCompositeFieldContainer[_hedgerow_common_pb2.ModelInfo]
    trusted: bool
    decode_tps: float
    prefill_tps: float
    hardware: str
    def __init__(self, id: _Optional[str] = ..., serial: _Optional[str] = ..., version: _Optional[str] = ..., models: _Optional[_Iterable[_Union[_hedgerow_common_pb2.ModelInfo, _Mapping]]] = ..., trusted: _Optional[bool] = ..., decode_tps: _Optional[float] = ..., prefill_tps: _Optional[float] = ..., hardware: _Optional[str] = ...) -> None: ...

class UpsertProviderRequest(_message.Message):
    __slots__ = ("provider", "session")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    provider: ProviderInfo
    session: str
    def __init__(self, provider: _Optional[_Union[ProviderInfo, _Mapping]] = ..., session: _Optional[str] = ...) -> None: ...

class UpsertProviderReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RemoveProviderRequest(_message.Message):
    __slots__ = ("provider_id",)
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    def __init__(self, provider_id: _Optional[str] = ...) -> None: ...

class RemoveProviderReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelLoad(_message.Message):
    __slots__ = ("model", "running", "waiting", "max_concurrency")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    model: str
    running: int
    waiting: int
    max_concurrency: int
    def __init__(self, model: _Optional[str] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., max_concurrency: _Optional[int] = ...) -> None: ...

class ReportLoadRequest(_message.Message):
    __slots__ = ("provider_id", "loads", "trusted")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    LOADS_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    loads: _containers.RepeatedCompositeFieldContainer[ModelLoad]
    trusted: bool
    def __init__(self, provider_id: _Optional[str] = ..., loads: _Optional[_Iterable[_Union[ModelLoad, _Mapping]]] = ..., trusted: _Optional[bool] = ...) -> None: ...

class ReportLoadReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("model", "traits", "exclude", "avoid_version", "allowlist", "prompt_tokens", "max_tokens", "may_queue", "reservation_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    AVOID_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAY_QUEUE_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    traits: _hedgerow_common_pb2.Traits
    exclude: _containers.RepeatedScalarFieldContainer[str]
    avoid_version: str
    allowlist: _containers.RepeatedScalarFieldContainer[str]
    prompt_tokens: int
    max_tokens: int
    may_queue: bool
    reservation_id: str
    def __init__(self, model: _Optional[str] = ..., traits: _Optional[_Union[_hedgerow_common_pb2.Traits, _Mapping]] = ..., exclude: _Optional[_Iterable[str]] = ..., avoid_version: _Optional[str] = ..., allowlist: _Optional[_Iterable[str]] = ..., prompt_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., may_queue: _Optional[bool] = ..., reservation_id: _Optional[str] = ...) -> None: ...

class ReserveReply(_message.Message):
    __slots__ = ("reservation_id", "provider_id", "provider_version", "queued_s")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUEUED_S_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    provider_id: str
    provider_version: str
    queued_s: float
    def __init__(self, reservation_id: _Optional[str] = ..., provider_id: _Optional[str] = ..., provider_version: _Optional[str] = ..., queued_s: _Optional[float] = ...) -> None: ...

class AttemptSpeed(_message.Message):
    __slots__ = ("ttft_s", "no_content", "decode_tps")
    TTFT_S_FIELD_NUMBER: _ClassVar[int]
    NO_CONTENT_FIELD_NUMBER: _ClassVar[int]
    DECODE_TPS_FIELD_NUMBER: _ClassVar[int]
    ttft_s: float
    no_content: bool
    decode_tps: float
    def __init__(self, ttft_s: _Optional[float] = ..., no_content: _Optional[bool] = ..., decode_tps: _Optional[float] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("reservation_id", "status_code", "speed")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    status_code: int
    speed: AttemptSpeed
    def __init__(self, reservation_id: _Optional[str] = ..., status_code: _Optional[int] = ..., speed: _Optional[_Union[AttemptSpeed, _Mapping]] = ...) -> None: ...

class ReleaseReply(_message.Message):
    __slots__ = ("released", "cooldown_entered")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_ENTERED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    cooldown_entered: bool
    def __init__(self, released: _Optional[bool] = ..., cooldown_entered: _Optional[bool] = ...) -> None: ...

class SlotCall(_message.Message):
    __slots__ = ("call_id", "reserve", "release", "timeout_s")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    reserve: ReserveRequest
    release: ReleaseRequest
    timeout_s: float
    def __init__(self, call_id: _Optional[int] = ..., reserve: _Optional[_Union[ReserveRequest, _Mapping]] = ..., release: _Optional[_Union[ReleaseRequest, _Mapping]] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class SlotAnswer(_message.Message):
    __slots__ = ("call_id", "reserved", "released", "refused")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    reserved: ReserveReply
    released: ReleaseReply
    refused: _hedgerow_common_pb2.Error
    def __init__(self, call_id: _Optional[int] = ..., reserved: _Optional[_Union[ReserveReply, _Mapping]] = ..., released: _Optional[_Union[ReleaseReply, _Mapping]] = ..., refused: _Optional[_Union[_hedgerow_common_pb2.Error, _Mapping]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "traits", "allowlist")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    model: str
    traits: _hedgerow_common_pb2.Traits
    allowlist: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., traits: _Optional[_Union[_hedgerow_common_pb2.Traits, _Mapping]] = ..., allowlist: _Optional[_Iterable[str]] = ...) -> None: ...

class ProviderVerdict(_message.Message):
    __slots__ = ("provider_id", "version", "eligible", "reasons")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    version: str
    eligible: bool
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, provider_id: _Optional[str] = ..., version: _Optional[str] = ..., eligible: _Optional[bool] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class ExplainReply(_message.Message):
    __slots__ = ("providers", "truncated", "total")
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderVerdict]
    truncated: bool
    total: int
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderVerdict, _Mapping]]] = ..., truncated: _Optional[bool] = ..., total: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("models", "truncated")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    truncated: bool
    def __init__(self, models: _Optional[_Iterable[str]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("providers_online", "slots_in_use", "queue_depth", "cooldowns_entered", "online_provider_ids")
    PROVIDERS_ONLINE_FIELD_NUMBER: _ClassVar[int]
    SLOTS_IN_USE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    COOLDOWNS_ENTERED_FIELD_NUMBER: _ClassVar[int]
    ONLINE_PROVIDER_IDS_FIELD_NUMBER: _ClassVar[int]
    providers_online: int
    slots_in_use: int
    queue_depth: int
    cooldowns_entered: int
    online_provider_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, providers_online: _Optional[int] = ..., slots_in_use: _Optional[int] = ..., queue_depth: _Optional[int] = ..., cooldowns_entered: _Optional[int] = ..., online_provider_ids: _Optional[_Iterable[str]] = ...) -> None: ...
