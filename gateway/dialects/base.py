"""What the request pipeline needs from a dialect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from contract import hedgerow_common_pb2 as common_pb2
from gateway.canonical import CanonicalRequest
from gateway.errors import ApiError, ErrorBody


class StreamRenderer(Protocol):
    def chunks(self, chunks: list[bytes]) -> bytes: ...
    def completed(self, usage: common_pb2.Usage) -> bytes: ...
    def error(self, err: ApiError) -> bytes:
        """The in-band error event that ends the stream (B3), from `Dialect.error_body`."""


class Assembler(Protocol):
    def add(self, chunk: bytes) -> None: ...
    def result(self, usage: common_pb2.Usage) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Dialect:
    name: str
    error_body: ErrorBody  # renders every error of this dialect
    lower: Callable[[dict[str, Any], bytes, int], CanonicalRequest]
    stream: Callable[[CanonicalRequest], StreamRenderer]
    assembler: Callable[[CanonicalRequest], Assembler]


class FinalObjectAssembler:
    """Non-streaming for dialects whose stream renderer also builds the final object: feed
    it the chunks, complete it, and answer with what `final(usage)` returns."""

    def __init__(
        self,
        renderer: StreamRenderer,
        final: Callable[[common_pb2.Usage], dict[str, Any]],
    ) -> None:
        self._renderer = renderer
        self._final = final

    def add(self, chunk: bytes) -> None:
        self._renderer.chunks([chunk])

    def result(self, usage: common_pb2.Usage) -> dict[str, Any]:
        self._renderer.completed(usage)
        return self._final(usage)
