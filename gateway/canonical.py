"""The canonical request every dialect lowers to, and the traits derived from it (A5)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.errors import bad_request

IMAGE_TOKENS = 300
VIDEO_TOKENS = 1500
PER_MESSAGE_TOKENS = 4
_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_VIDEO_PARTS = frozenset({"video_url", "input_video", "video"})


@dataclass(frozen=True)
class CanonicalRequest:
    model: str
    body: bytes  # OpenAI chat JSON, or OpenAI completions JSON
    completions: bool
    has_tools: bool
    requires_vision: bool
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    allowlist: tuple[str, ...] = ()


def lowered_chat(
    doc: dict[str, Any], body: dict[str, Any], raw: bytes, max_tokens: int
) -> CanonicalRequest:
    """The canonical request of a dialect lowered to chat: `body` is the chat request built
    from the client's `doc` (`raw` its bytes, for the prompt estimate)."""
    messages = body["messages"]
    images, videos = media_counts(messages)
    return CanonicalRequest(
        model=body["model"],
        body=json.dumps(body, separators=(",", ":")).encode(),
        completions=False,
        has_tools="tools" in body,
        requires_vision=images + videos > 0,
        prompt_tokens=estimate_prompt_tokens(len(raw), len(messages), images, videos),
        max_tokens=max_tokens,
        stream=doc.get("stream") is True,
        include_usage=True,
        allowlist=allowlist(doc),
    )


def media_counts(messages: Iterable[Any]) -> tuple[int, int]:
    """(images, videos) among content parts of chat-shaped messages."""
    images = videos = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if not isinstance(kind, str):
                continue
            if kind in _IMAGE_PARTS:
                images += 1
            elif kind in _VIDEO_PARTS:
                videos += 1
    return images, videos


def estimate_prompt_tokens(raw_len: int, messages: int, images: int, videos: int) -> int:
    """Rule constants (docs/behavior.md): bytes/4 + 4 per message; image 300, video 1500 tokens."""
    return (
        raw_len // 4 + PER_MESSAGE_TOKENS * messages + IMAGE_TOKENS * images + VIDEO_TOKENS * videos
    )


def has_tools(doc: dict[str, Any]) -> bool:
    tools = doc.get("tools")
    return isinstance(tools, list) and len(tools) > 0


def require_model(doc: dict[str, Any]) -> str:
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter", "model")
    return model


def positive_int(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"'{key}' must be a positive integer", key)
    return value


def allowlist(doc: dict[str, Any]) -> tuple[str, ...]:
    """OpenRouter-style `provider: {"only": [...]}` routing restriction."""
    pref = doc.get("provider")
    if pref is None:
        return ()
    only = pref.get("only") if isinstance(pref, dict) else None
    if only is None:
        return ()
    if not isinstance(only, list) or not all(isinstance(x, str) for x in only):
        raise bad_request("'provider.only' must be an array of provider ids", "provider.only")
    return tuple(only)


def check_n(doc: dict[str, Any]) -> None:
    n = doc.get("n")
    if n is not None and n != 1:
        raise bad_request("only n=1 is supported", "n")
