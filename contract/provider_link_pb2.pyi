from contract import hedgerow_common_pb2 as _hedgerow_common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Register(_message.Message):
    __slots__ = ("provider_id", "version", "models", "hardware", "public_key", "enrollment_token", "decode_tps", "prefill_tps")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    HARDWARE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DECODE_TPS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TPS_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    version: str
    models: _containers.RepeatedCompositeFieldContainer[_hedgerow_common_pb2.ModelInfo]
    hardware: str
    public_key: bytes
    enrollment_token: str
    decode_tps: float
    prefill_tps: float
    def __init__(self, provider_id: _Optional[str] = ..., version: _Optional[str] = ..., models: _Optional[_Iterable[_Union[_hedgerow_common_pb2.ModelInfo, _Mapping]]] = ..., hardware: _Optional[str] = ..., public_key: _Optional[bytes] = ..., enrollment_token: _Optional[str] = ..., decode_tps: _Optional[float] = ..., prefill_tps: _Optional[float] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("provider_id", "heartbeat_interval_s")
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    provider_id: str
    heartbeat_interval_s: float
    def __init__(self, provider_id: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class Challenge(_message.Message):
    __slots__ = ("nonce", "dispatcher_public_key")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    DISPATCHER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    dispatcher_public_key: bytes
    def __init__(self, nonce: _Optional[bytes] = ..., dispatcher_public_key: _Optional[bytes] = ...) -> None: ...

class ChallengeResponse(_message.Message):
    __slots__ = ("sealed_nonce",)
    SEALED_NONCE_FIELD_NUMBER: _ClassVar[int]
    sealed_nonce: bytes
    def __init__(self, sealed_nonce: _Optional[bytes] = ...) -> None: ...

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

class Heartbeat(_message.Message):
    __slots__ = ("loads",)
    LOADS_FIELD_NUMBER: _ClassVar[int]
    loads: _containers.RepeatedCompositeFieldContainer[ModelLoad]
    def __init__(self, loads: _Optional[_Iterable[_Union[ModelLoad, _Mapping]]] = ...) -> None: ...

class ModelsUpdate(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_hedgerow_common_pb2.ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[_hedgerow_common_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ("request_id", "session_public_key", "sealed_body", "completions")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SEALED_BODY_FIELD_NUMBER: _ClassVar[int]
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    session_public_key: bytes
    sealed_body: bytes
    completions: bool
    def __init__(self, request_id: _Optional[str] = ..., session_public_key: _Optional[bytes] = ..., sealed_body: _Optional[bytes] = ..., completions: _Optional[bool] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("request_id", "sealed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    sealed: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, request_id: _Optional[str] = ..., sealed: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Complete(_message.Message):
    __slots__ = ("request_id", "usage")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    usage: _hedgerow_common_pb2.Usage
    def __init__(self, request_id: _Optional[str] = ..., usage: _Optional[_Union[_hedgerow_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("request_id", "status_code", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status_code: int
    message: str
    def __init__(self, request_id: _Optional[str] = ..., status_code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("register", "registered", "challenge", "challenge_response", "heartbeat", "models_update", "request", "cancel", "accepted", "chunk", "complete", "error", "goodbye")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    MODELS_UPDATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    register: Register
    registered: Registered
    challenge: Challenge
    challenge_response: ChallengeResponse
    heartbeat: Heartbeat
    models_update: ModelsUpdate
    request: Request
    cancel: Cancel
    accepted: Accepted
    chunk: Chunk
    complete: Complete
    error: Error
    goodbye: Goodbye
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., registered: _Optional[_Union[Registered, _Mapping]] = ..., challenge: _Optional[_Union[Challenge, _Mapping]] = ..., challenge_response: _Optional[_Union[ChallengeResponse, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., models_update: _Optional[_Union[ModelsUpdate, _Mapping]] = ..., request: _Optional[_Union[Request, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ..., complete: _Optional[_Union[Complete, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ...) -> None: ...
