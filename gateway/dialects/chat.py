"""OpenAI chat completions: lowering, SSE rendering and non-streaming assembly."""

from __future__ import annotations

import json
import time
from typing import Any

from contract import hedgerow_common_pb2 as common_pb2
from gateway.canonical import (
    CanonicalRequest,
    allowlist,
    check_n,
    check_numbers,
    estimate_prompt_tokens,
    has_tools,
    media_counts,
    positive_int,
    require_model,
)
from gateway.dialects.deltas import (
    ToolArgs,
    ToolStart,
    chat_deltas,
    encode_chunk,
    first_choice,
    parse_chunk,
)
from gateway.errors import ApiError, bad_request, openai_error_body

DONE = b"data: [DONE]\n\n"
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def lower(doc: dict[str, Any], raw: bytes, default_max_tokens: int) -> CanonicalRequest:
    """Validate a chat request; the canonical body is the client's own bytes (no re-encoding)."""
    model = require_model(doc)
    check_numbers(doc, "chat")
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array", "messages")
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in _ROLES:
            raise bad_request(
                f"messages[{i}] must be an object with a valid 'role'", f"messages[{i}]"
            )
    check_n(doc)
    max_tokens = positive_int(doc, "max_completion_tokens") or positive_int(doc, "max_tokens")
    stream = doc.get("stream") is True
    options = doc.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    images, videos = media_counts(messages)
    return CanonicalRequest(
        model=model,
        body=raw,
        completions=False,
        has_tools=has_tools(doc),
        requires_vision=images + videos > 0,
        prompt_tokens=estimate_prompt_tokens(len(raw), len(messages), images, videos),
        max_tokens=max_tokens or default_max_tokens,
        stream=stream,
        include_usage=include_usage,
        allowlist=allowlist(doc),
    )


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_dict(usage: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
    }


class ChatStream:
    """Renders provider chunks as chat SSE; exactly one `[DONE]` (A9)."""

    def __init__(self, public_model: str, include_usage: bool) -> None:
        self._model = public_model
        self._include_usage = include_usage
        self._head: dict[str, Any] | None = None

    def _public(self, chunk: bytes) -> bytes:
        """The chunk as we re-encode it: never the provider's bytes (they could carry SSE
        framing of their own — a line break, an early `[DONE]`, an `event:` line — or a
        second `model`), always one line of JSON with the public model id (A9)."""
        doc = parse_chunk(chunk)
        if self._head is None:
            self._head = {k: doc.get(k) for k in ("id", "created")}
        doc["model"] = self._model
        return encode_chunk(doc)

    def chunks(self, chunks: list[bytes]) -> bytes:
        return b"".join(b"data: " + self._public(c) + b"\n\n" for c in chunks)

    def completed(self, usage: common_pb2.Usage) -> bytes:
        if not self._include_usage:
            return DONE
        head = self._head or {"id": "chatcmpl-hedgerow", "created": int(time.time())}
        trailer = {
            **head,
            "object": "chat.completion.chunk",
            "model": self._model,
            "choices": [],
            "usage": usage_dict(usage),
        }
        return b"data: " + json.dumps(trailer).encode() + b"\n\n" + DONE

    def error(self, err: ApiError) -> bytes:
        body = openai_error_body(err)
        body["error"]["status"] = err.status
        return b"data: " + json.dumps(body).encode() + b"\n\n" + DONE


class ChatAssembler:
    """Builds one `chat.completion` from the chunks of a non-streaming request."""

    def __init__(self, public_model: str) -> None:
        self._model = public_model
        self._id = ""
        self._created = 0
        self._role = "assistant"
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}
        self._finish: str | None = None

    def add(self, chunk: bytes) -> None:
        doc = parse_chunk(chunk)
        self._id = self._id or str(doc.get("id") or "")
        self._created = self._created or _int(doc.get("created"))
        choice = first_choice(doc)
        if choice is None:
            return
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        self._role = _str(delta.get("role")) or self._role
        self._content.append(_str(delta.get("content")))
        self._reasoning.append(_str(delta.get("reasoning_content") or delta.get("reasoning")))
        self._refusal.append(_str(delta.get("refusal")))
        for d in chat_deltas(chunk):
            if isinstance(d, ToolStart):
                slot = self._tool(d.index)
                slot["id"] = d.call_id or slot["id"]
                slot["function"]["name"] += d.name
            elif isinstance(d, ToolArgs):
                self._tool(d.index)["function"]["arguments"] += d.delta
        self._finish = _str(choice.get("finish_reason")) or self._finish

    def _tool(self, index: int) -> dict[str, Any]:
        return self._tools.setdefault(
            index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )

    def result(self, usage: common_pb2.Usage) -> dict[str, Any]:
        content = "".join(self._content)
        message: dict[str, Any] = {
            "role": self._role,
            "content": content if content or not self._tools else None,
            "refusal": "".join(self._refusal) or None,
        }
        reasoning = "".join(self._reasoning)
        if reasoning:
            message["reasoning_content"] = reasoning
        if self._tools:
            message["tool_calls"] = [self._tools[i] for i in sorted(self._tools)]
        return {
            "id": self._id or "chatcmpl-hedgerow",
            "object": "chat.completion",
            "created": self._created or int(time.time()),
            "model": self._model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": self._finish or "stop",
                }
            ],
            "usage": usage_dict(usage),
        }
