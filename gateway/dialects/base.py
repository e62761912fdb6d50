"""What the request pipeline needs from a dialect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.canonical import CanonicalRequest
from protos import hedgerow_common_pb2 as common_pb2


class StreamRenderer(Protocol):
    def chunks(self, chunks: list[bytes]) -> bytes: ...
    def completed(self, usage: common_pb2.Usage) -> bytes: ...
    def error(self, status: int, message: str) -> bytes: ...


class Assembler(Protocol):
    def add(self, chunk: bytes) -> None: ...
    def result(self, usage: common_pb2.Usage) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    anthropic_errors: bool
    lower: Callable[[dict[str, Any], bytes, int], CanonicalRequest]
    stream: Callable[[CanonicalRequest], StreamRenderer]
    assembler: Callable[[CanonicalRequest], Assembler]
