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
    """A token count: None when absent, else an integer in 1..MAX_OUTPUT_TOKENS (A16)."""
    value = doc.get(key)
    if value is None:
        return None
    _check_number(key, value, _TOKENS)
    assert isinstance(value, int)  # what the check let through
    return value


@dataclass(frozen=True)
class Bound:
    """The inclusive range of a numeric request field (A16)."""

    low: float
    high: float
    integer: bool = False


# A16: every number a dialect reads or passes on to providers, with the range it may take.
# Beyond it, or not a finite number, is a 400 naming the field: never a 500 of ours (2^63
# does not fit the dispatch's int64), nor a provider failure a client could cause at will
# (a provider's 500 strikes its breaker, C4). The ranges are the OpenAI and Anthropic API
# ones; token counts are capped at MAX_OUTPUT_TOKENS.
MAX_OUTPUT_TOKENS = 1_048_576
_INT64 = 2**63 - 1
_TOKENS = Bound(1, MAX_OUTPUT_TOKENS, integer=True)
_SAMPLING = {
    "temperature": Bound(0, 2),
    "top_p": Bound(0, 1),
    "seed": Bound(-_INT64 - 1, _INT64, integer=True),
}
_PENALTIES = {"presence_penalty": Bound(-2, 2), "frequency_penalty": Bound(-2, 2)}
_TOP_K = Bound(-1, MAX_OUTPUT_TOKENS, integer=True)  # vLLM and SGLang: -1 = off
NUMBERS: dict[str, dict[str, Bound]] = {
    "chat": {
        **_SAMPLING,
        **_PENALTIES,
        "max_tokens": _TOKENS,
        "max_completion_tokens": _TOKENS,
        "top_logprobs": Bound(0, 20, integer=True),
        "top_k": _TOP_K,
    },
    "completions": {
        **_SAMPLING,
        **_PENALTIES,
        "max_tokens": _TOKENS,
        "best_of": Bound(1, 20, integer=True),
        "logprobs": Bound(0, 5, integer=True),
        "top_k": _TOP_K,
    },
    "responses": {**_SAMPLING, "max_output_tokens": _TOKENS},
    "messages": {
        "max_tokens": _TOKENS,
        "temperature": Bound(0, 1),
        "top_p": Bound(0, 1),
        "top_k": Bound(0, MAX_OUTPUT_TOKENS, integer=True),
    },
}
_LOGIT_BIAS = Bound(-100, 100)
_MAX_LOGIT_BIAS_ENTRIES = 1024


def check_numbers(doc: dict[str, Any], dialect: str) -> None:
    """A16: every numeric field `dialect` reads or passes on is absent, null, or in range;
    else a 400 naming the field. (`logit_bias`, passed on by chat and completions, maps
    token ids to numbers in -100..100.)"""
    for key, bound in NUMBERS[dialect].items():
        value = doc.get(key)
        if value is not None:
            _check_number(key, value, bound)
    if dialect in ("chat", "completions") and doc.get("logit_bias") is not None:
        bias = doc["logit_bias"]
        if not isinstance(bias, dict) or len(bias) > _MAX_LOGIT_BIAS_ENTRIES:
            raise bad_request(
                f"'logit_bias' must be an object of at most {_MAX_LOGIT_BIAS_ENTRIES} entries",
                "logit_bias",
            )
        for value in bias.values():
            _check_number("logit_bias", value, _LOGIT_BIAS)


def _check_number(key: str, value: object, bound: Bound) -> None:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    # `not low <= x <= high` holds for NaN too (it compares false to everything).
    if (
        number is None
        or (bound.integer and not isinstance(number, int))
        or not bound.low <= number <= bound.high
    ):
        kind = "an integer" if bound.integer else "a number"
        raise bad_request(f"'{key}' must be {kind} from {bound.low} to {bound.high}", key)


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
    """`n` absent, null or the integer 1 (1.0 and true are not passed on to providers)."""
    n = doc.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise bad_request("only n=1 is supported", "n")
