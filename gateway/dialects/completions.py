"""OpenAI legacy completions: `prompt` string or a list of one."""

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
    positive_int,
    require_model,
)
from gateway.dialects.chat import ChatStream, usage_dict
from gateway.dialects.deltas import first_choice, parse_chunk
from gateway.errors import bad_request


def lower(doc: dict[str, Any], raw: bytes, default_max_tokens: int) -> CanonicalRequest:
    model = require_model(doc)
    check_numbers(doc, "completions")
    prompt = doc.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise bad_request("'prompt' must be a string or a list of one string", "prompt")
    elif not isinstance(prompt, str):
        raise bad_request("'prompt' must be a string", "prompt")
    check_n(doc)
    stream = doc.get("stream") is True
    options = doc.get("stream_options")
    return CanonicalRequest(
        model=model,
        body=raw,
        completions=True,
        has_tools=False,
        requires_vision=False,
        prompt_tokens=estimate_prompt_tokens(len(raw), 1, 0, 0),
        max_tokens=positive_int(doc, "max_tokens") or default_max_tokens,
        stream=stream,
        include_usage=stream and isinstance(options, dict) and options.get("include_usage") is True,
        allowlist=allowlist(doc),
    )


class CompletionsStream(ChatStream):
    """Same SSE framing as chat; the usage trailer is a `text_completion` object."""

    def completed(self, usage: common_pb2.Usage) -> bytes:
        if not self._include_usage:
            return super().completed(usage)
        head = self._head or {"id": "cmpl-hedgerow", "created": int(time.time())}
        trailer = {
            **head,
            "object": "text_completion",
            "model": self._model,
            "choices": [],
            "usage": usage_dict(usage),
        }
        return b"data: " + json.dumps(trailer).encode() + b"\n\n" + b"data: [DONE]\n\n"


class CompletionsAssembler:
    def __init__(self, public_model: str) -> None:
        self._model = public_model
        self._id = ""
        self._created = 0
        self._text: list[str] = []
        self._finish: str | None = None

    def add(self, chunk: bytes) -> None:
        doc = parse_chunk(chunk)
        self._id = self._id or str(doc.get("id") or "")
        created = doc.get("created")
        self._created = self._created or (created if isinstance(created, int) else 0)
        choice = first_choice(doc)
        if choice is None:
            return
        text, finish = choice.get("text"), choice.get("finish_reason")
        self._text.append(text if isinstance(text, str) else "")
        self._finish = (finish if isinstance(finish, str) else None) or self._finish

    def result(self, usage: common_pb2.Usage) -> dict[str, Any]:
        return {
            "id": self._id or "cmpl-hedgerow",
            "object": "text_completion",
            "created": self._created or int(time.time()),
            "model": self._model,
            "choices": [
                {
                    "index": 0,
                    "text": "".join(self._text),
                    "logprobs": None,
                    "finish_reason": self._finish or "stop",
                }
            ],
            "usage": usage_dict(usage),
        }
