from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class NormalizeRequest(_message.Message):
    __slots__ = ("body",)
    BODY_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    def __init__(self, body: _Optional[bytes] = ...) -> None: ...

class NormalizeReply(_message.Message):
    __slots__ = ("body", "changed", "repairs")
    BODY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    REPAIRS_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    changed: bool
    repairs: int
    def __init__(self, body: _Optional[bytes] = ..., changed: _Optional[bool] = ..., repairs: _Optional[int] = ...) -> None: ...
