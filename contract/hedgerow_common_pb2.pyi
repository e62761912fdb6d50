from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

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
