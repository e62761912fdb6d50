"""A9 and the threat model: a provider's chunk is re-encoded before it reaches a client,
never passed through, so the stream's framing and the public model id are ours alone."""

from __future__ import annotations

import json

import pytest

from gateway.dialects.chat import ChatStream
from gateway.dialects.completions import CompletionsStream
from gateway.dialects.deltas import BadChunk

PUBLIC = "hedgerow-sim-1"
STREAMS = [lambda: ChatStream(PUBLIC, True), lambda: CompletionsStream(PUBLIC, True)]


def _events(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"\n\n")
    return raw[:-2].split(b"\n\n")


@pytest.mark.parametrize("make", STREAMS, ids=["chat", "completions"])
@pytest.mark.parametrize(
    "forged",
    [
        # the public id nested elsewhere, a different model where clients read it
        b'{"meta":{"model":"' + PUBLIC.encode() + b'"},"model":"other","choices":[]}',
        # duplicate keys: parsers keep the last
        b'{"model":"' + PUBLIC.encode() + b'","model":"other","choices":[]}',
        # line breaks as JSON whitespace: would split the SSE event if relayed as is
        b'{"model":\n"' + PUBLIC.encode() + b'",\r\n"choices":[],\n\n"x":1}',
    ],
)
def test_a9_every_chunk_is_one_event_with_the_public_model(make, forged: bytes) -> None:
    raw = make().chunks([forged])
    events = _events(raw)
    assert len(events) == 1 and events[0].startswith(b"data: ")
    assert b"\n" not in events[0] and b"\r" not in events[0]
    assert json.loads(events[0][6:])["model"] == PUBLIC


@pytest.mark.parametrize("make", STREAMS, ids=["chat", "completions"])
@pytest.mark.parametrize(
    "forged",
    [
        # an early terminator and a forged event after a valid object
        b'{"model":"' + PUBLIC.encode() + b'","choices":[]}\n\ndata: [DONE]\n\n',
        b'{"model":"' + PUBLIC.encode() + b'","choices":[]}\n\nevent: error\ndata: {}',
        b"data: [DONE]",
    ],
)
def test_a9_a_chunk_carrying_framing_of_its_own_is_refused(make, forged: bytes) -> None:
    with pytest.raises(BadChunk):
        make().chunks([forged])


@pytest.mark.parametrize("make", STREAMS, ids=["chat", "completions"])
@pytest.mark.parametrize(
    ("chunk", "field", "expected"),
    [
        # what the dispatcher's classifier (the standard library) accepts as content: a
        # stricter reader in the gateway would turn a committed stream into an error
        (b'{"choices":[{"delta":{"content":"x"},"logprob":-Infinity}]}', None, None),
        (b'{"choices":[{"delta":{"content":"\\ud83d"}}]}', None, None),
        # an integer past 64 bits survives exactly
        (b'{"seed":1180591620717411303424,"choices":[]}', "seed", 1180591620717411303424),
    ],
)
def test_a9_chunks_the_classifier_accepts_are_relayed_exactly(
    make, chunk: bytes, field: str | None, expected: object
) -> None:
    events = _events(make().chunks([chunk]))
    assert len(events) == 1 and b"\n" not in events[0]
    doc = json.loads(events[0][6:])
    assert doc["model"] == PUBLIC
    if field is not None:
        assert doc[field] == expected
