from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_CODE_UNSPECIFIED: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_REQUEST: _ClassVar[ErrorCode]
    ERROR_CODE_INVALID_API_KEY: _ClassVar[ErrorCode]
    ERROR_CODE_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_MODEL_NOT_FOUND: _ClassVar[ErrorCode]
    ERROR_CODE_REQUEST_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_RATE_LIMIT_EXCEEDED: _ClassVar[ErrorCode]
    ERROR_CODE_MODEL_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_MODEL_TOO_LARGE: _ClassVar[ErrorCode]
    ERROR_CODE_PROVIDER_ERROR: _ClassVar[ErrorCode]
    ERROR_CODE_TIMEOUT: _ClassVar[ErrorCode]
    ERROR_CODE_SHUTTING_DOWN: _ClassVar[ErrorCode]
    ERROR_CODE_SERVICE_UNAVAILABLE: _ClassVar[ErrorCode]
    ERROR_CODE_INTERNAL_ERROR: _ClassVar[ErrorCode]
ERROR_CODE_UNSPECIFIED: ErrorCode
ERROR_CODE_INVALID_REQUEST: ErrorCode
ERROR_CODE_INVALID_API_KEY: ErrorCode
ERROR_CODE_NOT_FOUND: ErrorCode
ERROR_CODE_MODEL_NOT_FOUND: ErrorCode
ERROR_CODE_REQUEST_TOO_LARGE: ErrorCode
ERROR_CODE_RATE_LIMIT_EXCEEDED: ErrorCode
ERROR_CODE_MODEL_UNAVAILABLE: ErrorCode
ERROR_CODE_MODEL_TOO_LARGE: ErrorCode
ERROR_CODE_PROVIDER_ERROR: ErrorCode
ERROR_CODE_TIMEOUT: ErrorCode
ERROR_CODE_SHUTTING_DOWN: ErrorCode
ERROR_CODE_SERVICE_UNAVAILABLE: ErrorCode
ERROR_CODE_INTERNAL_ERROR: ErrorCode

class Traits(_message.Message):
    __slots__ = ("has_tools", "requires_vision")
    HAS_TOOLS_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_VISION_FIELD_NUMBER: _ClassVar[int]
    has_tools: bool
    requires_vision: bool
    def __init__(self, has_tools: _Optional[bool] = ..., requires_vision: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "is_vision", "template_render_ok", "cap_system", "cap_tools", "cap_vision", "max_concurrency")
    ID_FIELD_NUMBER: _ClassVar[int]
    IS_VISION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_RENDER_OK_FIELD_NUMBER: _ClassVar[int]
    CAP_SYSTEM_FIELD_NUMBER: _ClassVar[int]
    CAP_TOOLS_FIELD_NUMBER: _ClassVar[int]
    CAP_VISION_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    is_vision: bool
    template_render_ok: bool
    cap_system: bool
    cap_tools: bool
    cap_vision: bool
    max_concurrency: int
    def __init__(self, id: _Optional[str] = ..., is_vision: _Optional[bool] = ..., template_render_ok: _Optional[bool] = ..., cap_system: _Optional[bool] = ..., cap_tools: _Optional[bool] = ..., cap_vision: _Optional[bool] = ..., max_concurrency: _Optional[int] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "status", "message", "retry_after_s")
    CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    code: ErrorCode
    status: int
    message: str
    retry_after_s: float
    def __init__(self, code: _Optional[_Union[ErrorCode, str]] = ..., status: _Optional[int] = ..., message: _Optional[str] = ..., retry_after_s: _Optional[float] = ...) -> None: ...
