from contract import hedgerow_common_pb2 as _hedgerow_common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_KIND_UNSPECIFIED: _ClassVar[RequestKind]
    REQUEST_KIND_CHAT: _ClassVar[RequestKind]
    REQUEST_KIND_COMPLETIONS: _ClassVar[RequestKind]
REQUEST_KIND_UNSPECIFIED: RequestKind
REQUEST_KIND_CHAT: RequestKind
REQUEST_KIND_COMPLETIONS: RequestKind

class DispatchCall(_message.Message):
    __slots__ = ("call_id", "start", "cancel")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    start: DispatchRequest
    cancel: bool
    def __init__(self, call_id: _Optional[int] = ..., start: _Optional[_Union[DispatchRequest, _Mapping]] = ..., cancel: _Optional[bool] = ...) -> None: ...

class DispatchOut(_message.Message):
    __slots__ = ("call_id", "events", "end")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    events: DispatchEvents
    end: bool
    def __init__(self, call_id: _Optional[int] = ..., events: _Optional[_Union[DispatchEvents, _Mapping]] = ..., end: _Optional[bool] = ...) -> None: ...

class DispatchRequest(_message.Message):
    __slots__ = ("request_id", "model", "body", "kind", "traits", "prompt_tokens", "max_tokens", "allowlist")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    model: str
    body: bytes
    kind: RequestKind
    traits: _hedgerow_common_pb2.Traits
    prompt_tokens: int
    max_tokens: int
    allowlist: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., model: _Optional[str] = ..., body: _Optional[bytes] = ..., kind: _Optional[_Union[RequestKind, str]] = ..., traits: _Optional[_Union[_hedgerow_common_pb2.Traits, _Mapping]] = ..., prompt_tokens: _Optional[int] = ..., max_tokens: _Optional[int] = ..., allowlist: _Optional[_Iterable[str]] = ...) -> None: ...

class Committed(_message.Message):
    __slots__ = ("provider_id", "provider_version", "attempts", "queue_us", "dispatch_us", "provider_us", "admit_us")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    DISPATCH_US_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_US_FIELD_NUMBER: _ClassVar[int]
    ADMIT_US_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    provider_version: str
    attempts: int
    queue_us: int
    dispatch_us: int
    provider_us: int
    admit_us: int
    def __init__(self, provider_id: _Optional[str] = ..., provider_version: _Optional[str] = ..., attempts: _Optional[int] = ..., queue_us: _Optional[int] = ..., dispatch_us: _Optional[int] = ..., provider_us: _Optional[int] = ..., admit_us: _Optional[int] = ...) -> None: ...

class Chunks(_message.Message):
    __slots__ = ("chunks",)
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    chunks: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, chunks: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Completed(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: _hedgerow_common_pb2.Usage
    def __init__(self, usage: _Optional[_Union[_hedgerow_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class DispatchEvent(_message.Message):
    __slots__ = ("committed", "chunks", "completed", "stream_error", "failed")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    STREAM_ERROR_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    committed: Committed
    chunks: Chunks
    completed: Completed
    stream_error: _hedgerow_common_pb2.Error
    failed: _hedgerow_common_pb2.Error
    def __init__(self, committed: _Optional[_Union[Committed, _Mapping]] = ..., chunks: _Optional[_Union[Chunks, _Mapping]] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., stream_error: _Optional[_Union[_hedgerow_common_pb2.Error, _Mapping]] = ..., failed: _Optional[_Union[_hedgerow_common_pb2.Error, _Mapping]] = ...) -> None: ...

class DispatchEvents(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DispatchEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DispatchEvent, _Mapping]]] = ...) -> None: ...
