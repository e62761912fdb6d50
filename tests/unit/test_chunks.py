"""B1: the boilerplate classifier decides by parsed values, never by substring or key set."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.chunks import is_boilerplate


def chat(*choices: object, **top: object) -> bytes:
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": list(choices),
    }
    body.update(top)
    return json.dumps(body).encode()


def delta(finish_reason: object = None, **fields: object) -> dict[str, object]:
    return {"index": 0, "delta": dict(fields), "logprobs": None, "finish_reason": finish_reason}


def legacy(text: object, finish_reason: object = None) -> bytes:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return json.dumps({"object": "text_completion", "choices": [choice]}).encode()


def event(kind: str, **fields: object) -> bytes:
    return json.dumps({"type": kind, **fields}).encode()


TOOL_START = {
    "index": 0,
    "id": "call_1",
    "type": "function",
    "function": {"name": "f", "arguments": ""},
}

BOILERPLATE: list[tuple[str, bytes]] = [
    ("role only", chat(delta(role="assistant"))),
    ("role + empty content", chat(delta(role="assistant", content=""))),
    ("role + null content (vLLM)", chat(delta(role="assistant", content=None))),
    ("no role, empty content", chat(delta(content=""))),
    ("empty delta", chat(delta())),
    ("null delta", chat({"index": 0, "delta": None, "finish_reason": None})),
    ("choice without delta", chat({"index": 0, "finish_reason": None})),
    (
        "SGLang: reasoning_content/tool_calls null",
        chat(delta(role="assistant", content="", reasoning_content=None, tool_calls=None)),
    ),
    ("tool_calls empty list", chat(delta(role="assistant", tool_calls=[]))),
    ("refusal null", chat(delta(role="assistant", content=None, refusal=None))),
    ("unknown delta key null", chat(delta(role="assistant", audio=None))),
    ("unknown delta key {}", chat(delta(role="assistant", audio={}))),
    ("usage on the role chunk", chat(delta(role="assistant"), usage={"prompt_tokens": 9})),
    ("obfuscation extra", chat(delta(role="assistant", content=""), obfuscation="x7Yq")),
    ("logprobs present", chat({**delta(role="assistant"), "logprobs": {"content": []}})),
    ("choice-level metadata", chat({**delta(role="assistant"), "matched_stop": None})),
    ("finish_reason empty string", chat(delta(finish_reason="", role="assistant"))),
    ("two role-only choices", chat(delta(role="assistant"), {**delta(), "index": 1})),
    ("Responses response.created", event("response.created", response={"output": []})),
    ("Responses response.in_progress", event("response.in_progress", sequence_number=1)),
    ("legacy empty text", legacy("")),
    ("legacy null text", legacy(None)),
    ("leading whitespace", b"  \n" + chat(delta(role="assistant"))),
    ("role value is not content", chat(delta(role="a very long role name"))),
]

CONTENT: list[tuple[str, bytes]] = [
    ("text", chat(delta(content="Hi"))),
    ("role with first token (Ollama/MLX)", chat(delta(role="assistant", content="Hi"))),
    ("whitespace token", chat(delta(content=" "))),
    ("reasoning_content", chat(delta(reasoning_content="think"))),
    ("reasoning", chat(delta(role="assistant", reasoning="think"))),
    ("refusal", chat(delta(refusal="no"))),
    ("first tool delta, empty arguments", chat(delta(role="assistant", tool_calls=[TOOL_START]))),
    ("tool_calls entry that is {}", chat(delta(tool_calls=[{}]))),
    ("unknown delta key with value", chat(delta(role="assistant", audio={"id": "a"}))),
    ("unknown delta key false", chat(delta(flag=False))),
    ("unknown delta key 0", chat(delta(count=0))),
    ("finish chunk", chat(delta(finish_reason="stop"))),
    ("finish on role chunk", chat(delta(finish_reason="length", role="assistant"))),
    ("finish on the second choice", chat(delta(role="assistant"), delta(finish_reason="stop"))),
    ("content on the second choice", chat(delta(role="assistant"), delta(content="x"))),
    ("empty choices (usage tail)", chat(usage={"total_tokens": 3})),
    ("choices null", json.dumps({"object": "chat.completion.chunk", "choices": None}).encode()),
    ("choices is an object", json.dumps({"choices": {"0": {}}}).encode()),
    ("choice not an object", json.dumps({"choices": ["x"]}).encode()),
    ("delta is a string", chat({"index": 0, "delta": "x", "finish_reason": None})),
    ("full message choice", chat({"index": 0, "message": {"role": "a", "content": "x"}})),
    ("content quoting response.created", chat(delta(content='"response.created"'))),
    (
        "chat chunk typed response.created with content",
        chat(delta(content="x"), type="response.created"),
    ),
    ("Responses output_text.delta", event("response.output_text.delta", delta="Hi")),
    ("Responses output_item.added", event("response.output_item.added", item={})),
    ("Responses completed", event("response.completed")),
    ("type is not a string", json.dumps({"type": ["response.created"]}).encode()),
    ("no choices, no type", json.dumps({"id": "x", "usage": {}}).encode()),
    ("legacy text", legacy("Hi")),
    ("legacy finish", legacy("", finish_reason="stop")),
    ("[DONE]", b"[DONE]"),
    ("sse-framed", b"data: " + chat(delta(role="assistant"))),
    ("unparseable", b'{"choices": [{"delta": {"role": "assistant"'),
    ("plain text", b"hello"),
    ("empty payload", b""),
    ("json array", b"[]"),
    ("json string", b'"response.created"'),
    ("invalid utf-8", b'{"choices":[{"delta":{"role":"\xff"}}]}'),
    ("trailing garbage", chat(delta(role="assistant")) + b"x"),
    ("absurd nesting", b'{"choices":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
]


@pytest.mark.parametrize(("name", "payload"), BOILERPLATE, ids=[n for n, _ in BOILERPLATE])
def test_b1_boilerplate_is_held(name: str, payload: bytes) -> None:
    assert is_boilerplate(payload) is True, name


@pytest.mark.parametrize(("name", "payload"), CONTENT, ids=[n for n, _ in CONTENT])
def test_b1_content_commits(name: str, payload: bytes) -> None:
    assert is_boilerplate(payload) is False, name


def test_b1_table_is_large_enough() -> None:
    assert len(BOILERPLATE) + len(CONTENT) >= 35


def test_b1_escaped_keys_are_parsed_not_matched() -> None:
    # "\u0063ontent" is the key "content": only a parser sees it.
    assert (
        is_boilerplate(b'{"choices":[{"delta":{"\\u0063ontent":"x"},"finish_reason":null}]}')
        is False
    )
    assert is_boilerplate(b'{"\\u0074ype":"response.created"}') is True


@given(st.text(min_size=1))
def test_b1_any_text_value_in_content_is_content(text: str) -> None:
    assert is_boilerplate(chat(delta(role="assistant", content=text))) is False


@given(st.binary())
def test_b1_never_raises_on_arbitrary_bytes(payload: bytes) -> None:
    assert is_boilerplate(payload) in (True, False)
