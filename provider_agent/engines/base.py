"""The engine contract shared by `sim` and `openai`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class GenerateRequest:
    request_id: str
    model: str
    body: dict[str, Any]  # canonical chat (or legacy completions) request, tools repaired
    completions: bool
    prompt: str  # the rendered chat template, or the completions prompt
    prompt_tokens: int


@dataclass(frozen=True)
class Accepted:
    """Sent only when the model is loading cold (B6)."""


@dataclass(frozen=True)
class Finished:
    prompt_tokens: int
    completion_tokens: int


class EngineError(Exception):
    """The engine failed; `status` goes out in the error frame."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DropConnection(Exception):
    """Fault injection: the provider 'dies' — the link closes its socket."""


EngineOutput = Accepted | bytes | Finished


class Engine(Protocol):
    def generate(self, request: GenerateRequest) -> AsyncGenerator[EngineOutput, None]:
        """Yield Accepted (cold load only), chunk JSON bytes, then exactly one Finished.

        Cancel-safe: cancelling the consumer stops generation at once."""
        ...

    async def aclose(self) -> None:
        """Release what the engine holds (HTTP connections); called once at shutdown."""
        ...
