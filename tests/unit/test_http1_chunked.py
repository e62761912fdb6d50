"""The HTTP/1.1 client's pure parts: the incremental chunked-body decoder and `Origin`."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provider_agent.engines.http1 import MAX_CHUNK_LINE, ChunkedDecoder, HttpError, Origin

# Server-sent-event payloads, as an OpenAI-compatible upstream streams them: the data
# itself holds CRLFs and blank lines, which must not be mistaken for chunk framing.
EVENT_1 = b'data: {"choices":[{"delta":{"content":"he"}}]}\r\n\r\n'
EVENT_2 = b'data: {"choices":[{"delta":{"content":"llo"}}]}\n\n'
EVENT_3 = b"data: [DONE]\n\n"

CHUNKS: tuple[tuple[bytes, bytes], ...] = (
    # (size line, data)
    (b"5;name=value", b"hello"),
    (b"%X" % len(EVENT_1), EVENT_1),  # upper-case hex
    (b'%x; ext="quoted;value"' % len(EVENT_2), EVENT_2),  # lower-case hex, extension
    (b"00%x" % len(EVENT_3), EVENT_3),  # leading zeros
    (b"1 ", b"\r"),  # a lone CR as data, whitespace before the line end
)
BODY = b"".join(data for _, data in CHUNKS)
WIRE = b"".join(size + b"\r\n" + data + b"\r\n" for size, data in CHUNKS) + (
    b"0\r\nx-trailer: 1\r\n\r\n"
)


def decode(pieces: Iterable[bytes]) -> tuple[bytes, list[bool]]:
    """Feed `pieces` in order; return the body and `done` after each piece."""
    decoder = ChunkedDecoder()
    out: list[bytes] = []
    done_after: list[bool] = []
    for piece in pieces:
        out.append(decoder.feed(piece))
        done_after.append(decoder.done)
    return b"".join(out), done_after


def assert_decodes(pieces: list[bytes]) -> None:
    assert b"".join(pieces) == WIRE
    body, done_after = decode(pieces)
    assert body == BODY, pieces
    # done only once the final empty line (the last byte of the wire) has been fed
    last_nonempty = max(i for i, piece in enumerate(pieces) if piece)
    assert done_after[last_nonempty:] == [True] * (len(pieces) - last_nonempty), pieces
    assert not any(done_after[:last_nonempty]), pieces


def test_whole_body_in_one_piece() -> None:
    assert_decodes([WIRE])


def test_every_single_split() -> None:
    for i in range(len(WIRE) + 1):
        assert_decodes([WIRE[:i], WIRE[i:]])


def test_every_double_split() -> None:
    n = len(WIRE)
    for i in range(n + 1):
        for j in range(i, n + 1):
            assert_decodes([WIRE[:i], WIRE[i:j], WIRE[j:]])


def test_byte_by_byte() -> None:
    decoder = ChunkedDecoder()
    out = b""
    for k in range(len(WIRE)):
        assert not decoder.done, k
        out += decoder.feed(WIRE[k : k + 1])
    assert decoder.done
    assert out == BODY


def test_data_is_handed_on_as_soon_as_it_arrives() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"a\r\n01234") == b"01234"
    assert decoder.feed(b"56") == b"56"
    assert decoder.feed(b"789\r") == b"789"
    assert decoder.feed(b"\n3\r\nabc\r\n") == b"abc"
    assert not decoder.done
    assert decoder.feed(b"0\r\n\r\n") == b""
    assert decoder.done


def test_done_needs_the_final_empty_line() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n") == b"abc"
    assert not decoder.done
    decoder.feed(b"x-trailer: 1\r\n")
    assert not decoder.done
    decoder.feed(b"x-other: 2\r\n\r")
    assert not decoder.done
    decoder.feed(b"\n")
    assert decoder.done


def test_empty_body() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"0\r\n\r\n") == b""
    assert decoder.done


def test_empty_feeds_are_harmless() -> None:
    pieces = [b"", WIRE[:7], b"", b"", WIRE[7:], b""]
    body, _ = decode(pieces)
    assert body == BODY


MALFORMED: list[tuple[str, bytes]] = [
    ("non-hex size", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("hex then junk", b"5g\r\nhello\r\n0\r\n\r\n"),
    ("empty size", b"\r\nhello\r\n0\r\n\r\n"),
    ("only an extension", b";name=value\r\nhello\r\n0\r\n\r\n"),
    ("space inside the size", b"1 0\r\n"),
    ("negative size", b"-5\r\nhello\r\n0\r\n\r\n"),
    ("plus sign", b"+5\r\nhello\r\n0\r\n\r\n"),
    ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("0X prefix", b"0X5\r\nhello\r\n0\r\n\r\n"),
    ("data not followed by CRLF", b"5\r\nhelloXY\r\n0\r\n\r\n"),
    ("data followed by a bare LF", b"5\r\nhello\n0\r\n\r\n"),
    ("over-long size line", b"1" * (MAX_CHUNK_LINE + 1)),
    ("over-long extension", b"5;" + b"a" * (MAX_CHUNK_LINE + 10)),
    ("over-long trailer line", b"0\r\nx-trailer: " + b"a" * (MAX_CHUNK_LINE + 10)),
    ("over-long junk after data", b"5\r\nhello" + b"x" * (MAX_CHUNK_LINE + 10)),
]


@pytest.mark.parametrize("wire", [w for _, w in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_whole(wire: bytes) -> None:
    with pytest.raises(HttpError):
        ChunkedDecoder().feed(wire)


@pytest.mark.parametrize("wire", [w for _, w in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_byte_by_byte(wire: bytes) -> None:
    decoder = ChunkedDecoder()
    with pytest.raises(HttpError):
        for k in range(len(wire)):
            decoder.feed(wire[k : k + 1])


def test_long_line_limit_is_not_too_strict() -> None:
    # An extension just under the limit, arriving without its CRLF yet, is fine.
    decoder = ChunkedDecoder()
    line = b"5;" + b"a" * (MAX_CHUNK_LINE - 2)
    assert len(line) == MAX_CHUNK_LINE
    assert decoder.feed(line) == b""
    assert decoder.feed(b"\r\nhello\r\n0\r\n\r\n") == b"hello"
    assert decoder.done


def test_underscore_in_size_is_malformed() -> None:
    """int(..., 16) alone would take '1_0' as 16: a chunk size is hex digits only."""
    with pytest.raises(HttpError):
        ChunkedDecoder().feed(b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n")


# --- Origin --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path", "host_header"),
    [
        ("http://example.com", "http", "example.com", 80, "", "example.com"),
        ("https://example.com", "https", "example.com", 443, "", "example.com"),
        ("http://example.com/", "http", "example.com", 80, "", "example.com"),
        ("http://h:8000/v1/", "http", "h", 8000, "/v1", "h:8000"),
        ("http://h:8000/v1", "http", "h", 8000, "/v1", "h:8000"),
        ("https://h:8443/a/b//", "https", "h", 8443, "/a/b", "h:8443"),
        ("http://h:80/v1", "http", "h", 80, "/v1", "h"),
        ("https://h:443", "https", "h", 443, "", "h"),
        ("http://h:443", "http", "h", 443, "", "h:443"),
        ("https://h:80", "https", "h", 80, "", "h:80"),
        ("http://127.0.0.1:9000", "http", "127.0.0.1", 9000, "", "127.0.0.1:9000"),
        ("http://[::1]:8000/v1", "http", "::1", 8000, "/v1", "[::1]:8000"),
        ("http://[::1]/", "http", "::1", 80, "", "[::1]"),
        ("https://[2001:db8::5]", "https", "2001:db8::5", 443, "", "[2001:db8::5]"),
    ],
)
def test_origin_parse(
    url: str, scheme: str, host: str, port: int, path: str, host_header: str
) -> None:
    origin = Origin.parse(url)
    assert (origin.scheme, origin.host, origin.port, origin.path) == (scheme, host, port, path)
    assert origin.host_header == host_header


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com", "ws://h:80", "example.com:80", "h:8000/v1", "", "http://", "https:///v1"],
)
def test_origin_rejects_non_http(url: str) -> None:
    with pytest.raises(ValueError):
        Origin.parse(url)


# --- property ------------------------------------------------------------------------


@st.composite
def chunked_wire(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A random chunked body, split at random points: (body, pieces)."""
    datas = draw(st.lists(st.binary(min_size=1, max_size=200), max_size=8))
    wire = b""
    for data in datas:
        size = b"%X" % len(data) if draw(st.booleans()) else b"%x" % len(data)
        ext = draw(st.sampled_from([b"", b";a=b", b"; x", b';q="v;w"']))
        wire += size + ext + b"\r\n" + data + b"\r\n"
    trailer = draw(st.sampled_from([b"", b"x-trailer: 1\r\n", b"a: 1\r\nb: 2\r\n"]))
    wire += b"0\r\n" + trailer + b"\r\n"
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    bounds = [0, *cuts, len(wire)]
    pieces = [wire[a:b] for a, b in pairwise(bounds)]
    return b"".join(datas), pieces


@settings(max_examples=300, deadline=None)
@given(chunked_wire())
def test_property_any_split_decodes(case: tuple[bytes, list[bytes]]) -> None:
    body, pieces = case
    decoder = ChunkedDecoder()
    out = b""
    for piece in pieces:
        if piece:
            assert not decoder.done
        out += decoder.feed(piece)
    assert decoder.done
    assert out == body
