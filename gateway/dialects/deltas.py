"""Reads canonical chat chunks as semantic deltas, for dialects that render their own events
(Responses, Anthropic Messages)."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolStart:
    index: int
    call_id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgs:
    index: int
    delta: str


@dataclass(frozen=True, slots=True)
class FinishDelta:
    reason: str


Delta = TextDelta | ToolStart | ToolArgs | FinishDelta


def chat_deltas(chunk: bytes) -> list[Delta]:
    """The deltas of one `chat.completion.chunk` (choice 0; role-only deltas yield nothing)."""
    doc = json.loads(chunk)
    out: list[Delta] = []
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not choices or not isinstance(choices[0], dict):
        return out
    choice = choices[0]
    delta = choice.get("delta") or {}
    text = delta.get("content")
    if isinstance(text, str) and text:
        out.append(TextDelta(text))
    for call in delta.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if call.get("id") or fn.get("name"):
            out.append(ToolStart(index, call.get("id") or "", fn.get("name") or ""))
        if fn.get("arguments"):
            out.append(ToolArgs(index, fn["arguments"]))
    if choice.get("finish_reason"):
        out.append(FinishDelta(choice["finish_reason"]))
    return out


def text_of(content: object) -> str:
    """Plain text of a string or a list of text-bearing parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""
