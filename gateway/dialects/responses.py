"""OpenAI Responses API: lowered to canonical chat, the chat stream rendered back as
`response.*` events (A10). The non-streaming body is the stream's final `response` object,
so both paths share one renderer."""

from __future__ import annotations

import json
import time
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
from gateway.dialects.deltas import TextDelta, ToolArgs, ToolStart, chat_deltas, text_of
from gateway.errors import ApiError, bad_request, openai_error_body

_PASSTHROUGH = ("temperature", "top_p", "parallel_tool_calls", "user", "seed")
_ROLE_MAP = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"'{where}.content' must be a string or an array", f"{where}.content")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("file_id")
            if not isinstance(url, str):
                raise bad_request("input_image needs an image_url", f"{where}.content[{i}]")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        else:
            raise bad_request(f"unsupported content part {kind!r}", f"{where}.content[{i}]")
    return parts


def lower_input(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """`instructions` + `input` (string or items) -> chat messages."""
    messages: list[dict[str, Any]] = []
    instructions = doc.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    items = doc.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    if not isinstance(items, list) or not items:
        raise bad_request("'input' must be a string or a non-empty array", "input")
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_request(f"'{where}' must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            role_name = item.get("role", "")
            role = _ROLE_MAP.get(role_name) if isinstance(role_name, str) else None
            if role is None:
                raise bad_request(f"'{where}.role' is not a valid role", f"{where}.role")
            content = _content(item.get("content", ""), where)
            if role == "assistant" and isinstance(content, list):
                content = text_of(content)
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id") or item.get("id") or "",
                "type": "function",
                "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id", ""),
                    "content": output if isinstance(output, str) else text_of(output),
                }
            )
        elif kind == "reasoning":
            continue
        else:
            raise bad_request(f"unsupported input item type {kind!r}", f"{where}.type")
    return messages


def lower_tools(doc: dict[str, Any], out: dict[str, Any]) -> None:
    tools = doc.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_request("'tools' must be an array", "tools")
        chat_tools = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise bad_request("only function tools are supported", f"tools[{i}]")
            fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
            chat_tools.append({"type": "function", "function": fn})
        if chat_tools:
            out["tools"] = chat_tools
    choice = doc.get("tool_choice")
    if isinstance(choice, str):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}


def lower(doc: dict[str, Any], raw: bytes, default_max_tokens: int) -> CanonicalRequest:
    model = require_model(doc)
    check_numbers(doc, "responses")
    messages = lower_input(doc)
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    lower_tools(doc, body)
    max_tokens = positive_int(doc, "max_output_tokens")
    if max_tokens:
        body["max_tokens"] = max_tokens
    fmt = (doc.get("text") or {}).get("format") if isinstance(doc.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt
            },
        }
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    for key in _PASSTHROUGH:
        if key in doc:
            body[key] = doc[key]
    return lowered_chat(doc, body, raw, max_tokens or default_max_tokens)


class ResponsesStream:
    """Chat chunks -> Responses events. Call `chunks`, then one of `completed` / `error`."""

    def __init__(self, public_model: str) -> None:
        self._model = public_model
        self._id = f"resp_{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._seq = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._text_item: dict[str, Any] | None = None
        self._tools: dict[int, dict[str, Any]] = {}  # chat tool index -> function_call item

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

    def response(self, status: str, usage: common_pb2.Usage | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "model": self._model,
            "output": self._output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "temperature": None,
            "top_p": None,
        }
        if usage is not None:
            body["usage"] = {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            }
        return body

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        snapshot = self.response("in_progress")
        return self._event("response.created", response=snapshot) + self._event(
            "response.in_progress", response=snapshot
        )

    def _close_text(self) -> bytes:
        item = self._text_item
        if item is None:
            return b""
        self._text_item = None
        index = self._output.index(item)
        part = item["content"][0]
        item["status"] = "completed"
        return (
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            + self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _close_tools(self) -> bytes:
        out = b""
        for item in self._tools.values():
            index = self._output.index(item)
            item["status"] = "completed"
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
            out += self._event("response.output_item.done", output_index=index, item=item)
        self._tools.clear()
        return out

    def chunks(self, chunks: list[bytes]) -> bytes:
        out = [self._start()]
        for chunk in chunks:
            for delta in chat_deltas(chunk):
                if isinstance(delta, TextDelta):
                    out.append(self._text(delta.text))
                elif isinstance(delta, ToolStart):
                    out.append(self._close_text())
                    item = {
                        "id": f"fc_{uuid.uuid4().hex[:24]}",
                        "type": "function_call",
                        "status": "in_progress",
                        "call_id": delta.call_id,
                        "name": delta.name,
                        "arguments": "",
                    }
                    self._tools[delta.index] = item
                    self._output.append(item)
                    out.append(
                        self._event(
                            "response.output_item.added",
                            output_index=len(self._output) - 1,
                            item=item,
                        )
                    )
                elif isinstance(delta, ToolArgs) and delta.index in self._tools:
                    item = self._tools[delta.index]
                    item["arguments"] += delta.delta
                    out.append(
                        self._event(
                            "response.function_call_arguments.delta",
                            item_id=item["id"],
                            output_index=self._output.index(item),
                            delta=delta.delta,
                        )
                    )
        return b"".join(out)

    def _text(self, text: str) -> bytes:
        out = b""
        if self._text_item is None:
            item: dict[str, Any] = {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self._output.append(item)
            self._text_item = item
            index = len(self._output) - 1
            out += self._event(
                "response.output_item.added", output_index=index, item={**item, "content": []}
            )
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
            item["content"].append(part)
            out += self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=dict(part),
            )
        current = self._text_item
        current["content"][0]["text"] += text
        return out + self._event(
            "response.output_text.delta",
            item_id=current["id"],
            output_index=self._output.index(current),
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def completed(self, usage: common_pb2.Usage) -> bytes:
        out = self._start() + self._close_text() + self._close_tools()
        return out + self._event("response.completed", response=self.response("completed", usage))

    def error(self, err: ApiError) -> bytes:
        out = self._start()
        error = openai_error_body(err)["error"]
        failed = self.response("failed")
        # `response.error.code` is an enum of OpenAI's; our own code rides on the error event.
        failed["error"] = {"code": _response_error_code(err.status), "message": err.message}
        return (
            out
            + self._event("error", code=error["code"], message=err.message, param=None, error=error)
            + self._event("response.failed", response=failed)
        )


def _response_error_code(status: int) -> str:
    """The nearest value of the Responses API's `ResponseError.code` enum."""
    if status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if 400 <= status < 500 else "server_error"
