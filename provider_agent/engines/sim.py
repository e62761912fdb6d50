"""The built-in simulated engine: deterministic text, real timing, injectable faults (E5).

Faults come from the provider's settings (every request) or from a marker in the request's
message text, `[[sim:fault=KIND]]` (one request), so tests and demos can script failures
through any client or SDK:

- `error_before_content`: role chunk, then a 500 error.
- `disconnect_after_preamble`: role chunk, then the provider drops its connection.
- `stall_after_preamble`: role chunk, then silence until cancelled.
- `empty_after_preamble`: role chunk, then a clean finish with no content.
- `error_after_content`: N content chunks, then a 500 error.
- `slow_start`: first content arrives `slow_start_s` late.
- `template_crash`: a tools request fails with 500 before any chunk (the incident class).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
import time
import uuid
from collections.abc import AsyncGenerator, Iterable
from typing import Any

from provider_agent.config import SimSettings
from provider_agent.engines.base import (
    Accepted,
    DropConnection,
    EngineError,
    EngineOutput,
    Finished,
    GenerateRequest,
)

FAULTS = frozenset(
    {
        "error_before_content",
        "disconnect_after_preamble",
        "stall_after_preamble",
        "empty_after_preamble",
        "error_after_content",
        "slow_start",
        "template_crash",
    }
)
_MARKER = re.compile(r"\[\[sim:fault=([a-z_]+)\]\]")
_WORDS = (
    "the quiet hedgerow carries every request along a path of small green leaves while "
    "providers hum and tokens flow like water over stones in the early morning light"
).split()


def request_faults(body: dict[str, Any]) -> set[str]:
    """Faults named by `[[sim:fault=KIND]]` markers anywhere in the request's text."""
    found: set[str] = set()
    for text in _texts(body):
        found.update(m for m in _MARKER.findall(text) if m in FAULTS)
    return found


def _texts(body: dict[str, Any]) -> Iterable[str]:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        yield prompt
    elif isinstance(prompt, list):
        yield from (p for p in prompt if isinstance(p, str))
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            yield from (
                p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )


def sample_arguments(schema: Any) -> Any:
    """A small value that satisfies a (repaired) JSON schema, for simulated tool calls."""
    if not isinstance(schema, dict):
        return "sim"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {k: sample_arguments(props.get(k)) for k in required if isinstance(k, str)}
    return {"integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}.get(
        kind if isinstance(kind, str) else "", "sim"
    )


class SimEngine:
    def __init__(self, settings: SimSettings, clock: Any = time.time) -> None:
        self._s = settings
        self._clock = clock
        self._loaded: set[str] = set()

    async def aclose(self) -> None:
        """Nothing to release."""

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[EngineOutput, None]:
        faults = set(self._s.faults) | request_faults(request.body)
        body = request.body
        tools = body.get("tools")
        if "template_crash" in faults and isinstance(tools, list) and tools:
            raise EngineError(500, "chat template render failed: upper filter requires string")
        if self._s.cold_load_s > 0 and request.model not in self._loaded:
            yield Accepted()
            await asyncio.sleep(self._s.cold_load_s)
            self._loaded.add(request.model)
        chunk = _ChunkMaker(request, int(self._clock()))
        limit = _max_tokens(body, self._s.default_max_tokens)
        if not request.completions:
            yield chunk.role()
            if "error_before_content" in faults:
                raise EngineError(500, "simulated failure before content")
            if "disconnect_after_preamble" in faults:
                raise DropConnection()
            if "stall_after_preamble" in faults:
                await asyncio.Event().wait()
            if "empty_after_preamble" in faults:
                yield chunk.finish("stop")
                yield Finished(request.prompt_tokens, 0)
                return
        elif "error_before_content" in faults:
            raise EngineError(500, "simulated failure before content")
        delay = self._s.ttft_s + (self._s.slow_start_s if "slow_start" in faults else 0.0)
        await asyncio.sleep(delay)
        call = None if request.completions else _tool_call(body)
        produced = 0
        if call is not None:
            name, arguments = call
            yield chunk.tool_start(name)
            for piece in _split(arguments, 3):
                await asyncio.sleep(1.0 / self._s.tokens_per_s)
                yield chunk.tool_args(piece)
                produced += 1
            yield chunk.finish("tool_calls")
            yield Finished(request.prompt_tokens, produced)
            return
        rng = random.Random(hashlib.sha256(request.prompt.encode()).digest())
        interval = 1.0 / self._s.tokens_per_s
        for i in range(limit):
            if i:
                await asyncio.sleep(interval)
            if "error_after_content" in faults and produced >= self._s.fault_after_chunks:
                raise EngineError(500, "simulated failure after content")
            word = rng.choice(_WORDS)
            yield chunk.text(word if i == 0 else f" {word}")
            produced += 1
        yield chunk.finish("length")
        yield Finished(request.prompt_tokens, produced)


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(value, default)
    return default


def _tool_call(body: dict[str, Any]) -> tuple[str, str] | None:
    """Call the first (or the forced) tool when the last turn is the user's."""
    tools = body.get("tools")
    messages = body.get("messages") or []
    if not isinstance(tools, list) or not tools or body.get("tool_choice") == "none":
        return None
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    chosen = body.get("tool_choice")
    forced = chosen.get("function", {}).get("name") if isinstance(chosen, dict) else None
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            if forced and fn["name"] != forced:
                continue
            return fn["name"], json.dumps(sample_arguments(fn.get("parameters")))
    return None


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class _ChunkMaker:
    """Encodes OpenAI chunk JSON for one response."""

    def __init__(self, request: GenerateRequest, created: int) -> None:
        self._completions = request.completions
        prefix = "cmpl" if request.completions else "chatcmpl"
        self._head: dict[str, Any] = {
            "id": f"{prefix}-{uuid.uuid4().hex[:24]}",
            "object": "text_completion" if request.completions else "chat.completion.chunk",
            "created": created,
            "model": request.model,
        }
        self._call_id = f"call_{uuid.uuid4().hex[:24]}"

    def _encode(self, choice: dict[str, Any]) -> bytes:
        return json.dumps({**self._head, "choices": [{"index": 0, **choice}]}).encode()

    def role(self) -> bytes:
        return self._encode({"delta": {"role": "assistant", "content": ""}, "finish_reason": None})

    def text(self, text: str) -> bytes:
        if self._completions:
            return self._encode({"text": text, "logprobs": None, "finish_reason": None})
        return self._encode({"delta": {"content": text}, "finish_reason": None})

    def tool_start(self, name: str) -> bytes:
        call = {
            "index": 0,
            "id": self._call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self._encode({"delta": {"tool_calls": [call]}, "finish_reason": None})

    def tool_args(self, piece: str) -> bytes:
        call = {"index": 0, "function": {"arguments": piece}}
        return self._encode({"delta": {"tool_calls": [call]}, "finish_reason": None})

    def finish(self, reason: str) -> bytes:
        if self._completions:
            return self._encode({"text": "", "logprobs": None, "finish_reason": reason})
        return self._encode({"delta": {}, "finish_reason": reason})
