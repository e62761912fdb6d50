"""Reads canonical chat chunks as semantic deltas, for dialects that render their own events
(Responses, Anthropic Messages)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import orjson


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


class BadChunk(ValueError):
    """A provider chunk that is not a JSON object (providers are untrusted)."""


# orjson reads integers past 64 bits as floats: a number with this many digits is read by
# the standard library instead, so it survives exactly.
_LONG_NUMBER = re.compile(rb"[0-9]{20}")


def parse_chunk(chunk: bytes) -> dict[str, Any]:
    """One provider chunk as a JSON object. orjson on the hot path; the standard library
    where orjson is stricter than what the dispatcher's classifier (`contract.chunks`)
    already accepted as content (NaN, lone surrogates) or would round a number."""
    try:
        if _LONG_NUMBER.search(chunk) is None:
            try:
                doc = orjson.loads(chunk)
            except orjson.JSONDecodeError:
                doc = json.loads(chunk)
        else:
            doc = json.loads(chunk)
    except (ValueError, RecursionError) as exc:
        raise BadChunk("provider sent a chunk that is not JSON") from exc
    if not isinstance(doc, dict):
        raise BadChunk("provider sent a chunk that is not a JSON object")
    return doc


def encode_chunk(doc: dict[str, Any]) -> bytes:
    """`doc` as one line of JSON (no raw line break can reach the SSE framing): orjson, or
    the standard library for what orjson cannot write (a lone surrogate, an integer past
    64 bits, NaN as the provider sent it)."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(doc, separators=(",", ":")).encode()


def first_choice(doc: dict[str, Any]) -> dict[str, Any] | None:
    choices = doc.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def chat_deltas(chunk: bytes) -> list[Delta]:
    """The deltas of one `chat.completion.chunk` (choice 0; role-only deltas yield nothing)."""
    out: list[Delta] = []
    choice = first_choice(parse_chunk(chunk))
    if choice is None:
        return out
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = {}
    text = delta.get("content")
    if isinstance(text, str) and text:
        out.append(TextDelta(text))
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        index = call.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool):
            raise BadChunk("provider sent a tool call with a non-integer index")
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        name, args, call_id = fn.get("name"), fn.get("arguments"), call.get("id")
        if call_id or name:
            out.append(ToolStart(index, str(call_id or ""), str(name or "")))
        if isinstance(args, str) and args:
            out.append(ToolArgs(index, args))
    reason = choice.get("finish_reason")
    if isinstance(reason, str) and reason:
        out.append(FinishDelta(reason))
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
