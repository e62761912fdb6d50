"""Anthropic Messages: lowered to canonical chat, the chat stream rendered back as
`message_start ... message_stop` (A10). Non-streaming answers with the renderer's final
message, so both paths share one renderer."""

from __future__ import annotations

import json
import uuid
from typing import Any

from contract import hedgerow_common_pb2 as common_pb2
from gateway.canonical import (
    CanonicalRequest,
    check_numbers,
    lowered_chat,
    positive_int,
    require_model,
)
from gateway.dialects.deltas import (
    FinishDelta,
    TextDelta,
    ToolArgs,
    ToolStart,
    chat_deltas,
    text_of,
)
from gateway.errors import ApiError, anthropic_error_body, bad_request

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_PASSTHROUGH = ("temperature", "top_p", "top_k")


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif isinstance(source, dict) and source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise bad_request("image blocks need a base64 or url source", f"{where}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _lower_message(message: Any, i: int) -> list[dict[str, Any]]:
    where = f"messages[{i}]"
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise bad_request(f"'{where}' must have role user or assistant", where)
    role = message["role"]
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise bad_request(f"'{where}.content' must be a string or an array", f"{where}.content")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}.content[{j}]"
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": json.dumps(block.get("input", {})),
                    },
                }
            )
        elif kind == "tool_result" and role == "user":
            text = text_of(block.get("content", ""))
            if block.get("is_error"):
                text = f"Error: {text}"
            results.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise bad_request(f"unsupported content block {kind!r}", at)
    out: list[dict[str, Any]] = list(results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        if text or calls:
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
    elif parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append(
            {"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts}
        )
    return out


def lower(doc: dict[str, Any], raw: bytes, default_max_tokens: int) -> CanonicalRequest:
    model = require_model(doc)
    check_numbers(doc, "messages")
    max_tokens = positive_int(doc, "max_tokens")
    if max_tokens is None:
        raise bad_request("max_tokens: Field required", "max_tokens")
    raw_messages = doc.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise bad_request("'messages' must be a non-empty array", "messages")
    messages: list[dict[str, Any]] = []
    system = doc.get("system")
    if system is not None:
        text = text_of(system)
        if not isinstance(system, str | list):
            raise bad_request("'system' must be a string or an array of text blocks", "system")
        if text:
            messages.append({"role": "system", "content": text})
    for i, message in enumerate(raw_messages):
        messages.extend(_lower_message(message, i))
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "max_tokens": max_tokens,
    }
    tools = doc.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("'tools' must be an array", "tools")
        chat_tools = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise bad_request("each tool needs a name", f"tools[{i}]")
            fn = {
                "name": tool["name"],
                "parameters": tool.get("input_schema") or {"type": "object"},
            }
            if "description" in tool:
                fn["description"] = tool["description"]
            chat_tools.append({"type": "function", "function": fn})
        if chat_tools:
            body["tools"] = chat_tools
    choice = doc.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        named = {"type": "function", "function": {"name": str(choice.get("name", ""))}}
        simple = {"auto": "auto", "any": "required", "none": "none"}
        body["tool_choice"] = simple.get(kind, named) if isinstance(kind, str) else named
    stops = doc.get("stop_sequences")
    if isinstance(stops, list) and stops:
        body["stop"] = stops
    for key in _PASSTHROUGH:
        if key in doc:
            body[key] = doc[key]
    return lowered_chat(doc, body, raw, max_tokens)


class MessagesStream:
    """Chat chunks -> Anthropic stream events. `chunks`, then one of `completed` / `error`."""

    def __init__(self, public_model: str) -> None:
        self._model = public_model
        self._id = f"msg_{uuid.uuid4().hex[:24]}"
        self._started = False
        self._blocks: list[dict[str, Any]] = []
        self._open: int | None = None  # index of the open content block
        self._tool_blocks: dict[int, int] = {}  # chat tool index -> block index
        self._stop_reason = "end_turn"
        self._tool_json: dict[int, str] = {}

    @staticmethod
    def _event(kind: str, **fields: Any) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()

    def message(self, usage: common_pb2.Usage | None, *, final: bool) -> dict[str, Any]:
        return {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": self._blocks if final else [],
            "stop_reason": self._stop_reason if final else None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.prompt_tokens if usage else 0,
                "output_tokens": usage.completion_tokens if usage else 0,
            },
        }

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._event("message_start", message=self.message(None, final=False))

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        block = self._blocks[index]
        if block["type"] == "tool_use":
            raw = self._tool_json.get(index, "")
            try:
                block["input"] = json.loads(raw) if raw else {}
            except ValueError:
                block["input"] = {"_raw": raw}
        return self._event("content_block_stop", index=index)

    def _open_block(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._blocks.append(block)
        self._open = len(self._blocks) - 1
        start = {**block, "input": {}} if block["type"] == "tool_use" else {**block, "text": ""}
        return out + self._event("content_block_start", index=self._open, content_block=start)

    def chunks(self, chunks: list[bytes]) -> bytes:
        out = [self._start()]
        for chunk in chunks:
            for delta in chat_deltas(chunk):
                if isinstance(delta, TextDelta):
                    if self._open is None or self._blocks[self._open]["type"] != "text":
                        out.append(self._open_block({"type": "text", "text": ""}))
                    assert self._open is not None
                    self._blocks[self._open]["text"] += delta.text
                    out.append(
                        self._event(
                            "content_block_delta",
                            index=self._open,
                            delta={"type": "text_delta", "text": delta.text},
                        )
                    )
                elif isinstance(delta, ToolStart):
                    out.append(
                        self._open_block(
                            {
                                "type": "tool_use",
                                "id": delta.call_id,
                                "name": delta.name,
                                "input": {},
                            }
                        )
                    )
                    assert self._open is not None
                    self._tool_blocks[delta.index] = self._open
                elif isinstance(delta, ToolArgs) and delta.index in self._tool_blocks:
                    index = self._tool_blocks[delta.index]
                    self._tool_json[index] = self._tool_json.get(index, "") + delta.delta
                    out.append(
                        self._event(
                            "content_block_delta",
                            index=index,
                            delta={"type": "input_json_delta", "partial_json": delta.delta},
                        )
                    )
                elif isinstance(delta, FinishDelta):
                    self._stop_reason = STOP_REASONS.get(delta.reason, "end_turn")
        return b"".join(out)

    def completed(self, usage: common_pb2.Usage) -> bytes:
        out = self._start() + self._close()
        out += self._event(
            "message_delta",
            delta={"stop_reason": self._stop_reason, "stop_sequence": None},
            usage={"output_tokens": usage.completion_tokens},
        )
        return out + self._event("message_stop")

    def error(self, err: ApiError) -> bytes:
        return self._start() + self._event("error", error=anthropic_error_body(err)["error"])
