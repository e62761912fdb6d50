"""Issue 8 fuzzing of the pure halves: any JSON body lowers to a canonical request or a 400
ApiError naming the problem; any provider chunk renders or raises BadChunk. Never anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from contract import hedgerow_common_pb2 as common_pb2
from contract.errors import ErrorCode
from gateway.dialects.anthropic import MessagesStream
from gateway.dialects.chat import ChatAssembler, ChatStream
from gateway.dialects.completions import CompletionsAssembler
from gateway.dialects.deltas import BadChunk
from gateway.dialects.registry import (
    CHAT,
    COMPLETIONS,
    MESSAGES,
    RESPONSES,
    messages_assembler,
    responses_assembler,
)
from gateway.dialects.responses import ResponsesStream
from gateway.errors import ApiError

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
)
keys = st.sampled_from(
    [
        "model",
        "messages",
        "input",
        "prompt",
        "role",
        "content",
        "type",
        "text",
        "tools",
        "function",
        "parameters",
        "input_schema",
        "name",
        "tool_calls",
        "tool_choice",
        "max_tokens",
        "stream",
        "n",
        "system",
        "instructions",
        "call_id",
        "output",
        "source",
        "image_url",
        "arguments",
        "delta",
        "choices",
        "finish_reason",
        "index",
        "id",
        "provider",
        "only",
        "max_output_tokens",
        "x",
    ]
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
bodies = st.dictionaries(keys, json_values, max_size=8)
# Bodies that get past the first checks, so the deeper branches are reached too.
plausible = st.fixed_dictionaries(
    {"model": st.just("m"), "max_tokens": st.integers(-1, 50)},
    optional={
        "messages": st.lists(st.dictionaries(keys, json_values, max_size=4), max_size=4),
        "input": json_values,
        "prompt": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "system": json_values,
        "stream": st.booleans(),
    },
)


@settings(max_examples=1500, deadline=None)
@given(body=bodies | plausible)
def test_a3_lowering_never_raises_anything_but_a_400(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    for dialect in (CHAT, COMPLETIONS, RESPONSES, MESSAGES):
        try:
            req = dialect.lower(body, raw, 256)
        except ApiError as err:
            assert err.status == 400 and err.message
            continue
        assert req.model and req.max_tokens > 0 and req.prompt_tokens >= 0
        json.loads(req.body)


chunks = (
    st.binary(max_size=40)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.builds(
        lambda delta, finish: json.dumps(
            {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        ).encode(),
        st.dictionaries(keys, json_values, max_size=4),
        scalars,
    )
)


@settings(max_examples=1500, deadline=None)
@given(stream=st.lists(chunks, max_size=6))
def test_a9_renderers_survive_any_provider_chunk(stream: list[bytes]) -> None:
    usage = common_pb2.Usage(prompt_tokens=1, completion_tokens=2)
    for make in (
        lambda: ChatStream("m", True),
        lambda: ResponsesStream("m"),
        lambda: MessagesStream("m"),
    ):
        renderer = make()
        try:
            for chunk in stream:
                renderer.chunks([chunk])
        except BadChunk:
            assert renderer.error(ApiError(ErrorCode.PROVIDER_ERROR, "bad chunk"))
            continue
        assert renderer.completed(usage)
    for assembler in (
        ChatAssembler("m"),
        CompletionsAssembler("m"),
        responses_assembler("m"),
        messages_assembler("m"),
    ):
        try:
            for chunk in stream:
                assembler.add(chunk)
        except BadChunk:
            continue
        json.dumps(assembler.result(usage))


def test_a9_tool_call_index_must_be_an_integer() -> None:
    """A provider chunk with a non-integer tool-call index is a bad chunk, not a crash."""
    import pytest

    call = {"index": [1], "id": "x", "function": {"name": "f", "arguments": ""}}
    bad = json.dumps({"id": "c", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    for renderer in (ResponsesStream("m"), MessagesStream("m")):
        with pytest.raises(BadChunk):
            renderer.chunks([bad.encode()])
    with pytest.raises(BadChunk):
        ChatAssembler("m").add(bad.encode())
