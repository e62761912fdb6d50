"""The `openai` engine against a real OpenAI-compatible HTTP server (E5): SSE pass-through,
usage, upstream HTTP errors mapped to error-frame statuses, prompt close on Cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from provider_agent.engines.base import EngineError, EngineOutput, Finished, GenerateRequest
from provider_agent.engines.openai import OpenAIEngine, upstream_status
from tests.fakes.upstream import WORDS, FakeUpstream, fake_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as server:
        yield server


def request(text: str = "hi", *, completions: bool = False, **extra: Any) -> GenerateRequest:
    if completions:
        body: dict[str, Any] = {"model": "m", "prompt": text, **extra}
    else:
        body = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    return GenerateRequest("r1", "m", body, completions, prompt=text, prompt_tokens=3)


async def collect(engine: OpenAIEngine, req: GenerateRequest) -> list[EngineOutput]:
    """Every output, with batches (chunks ready together) flattened into single chunks."""
    out: list[EngineOutput] = []
    async for item in engine.generate(req):
        out.extend(item) if isinstance(item, list) else out.append(item)
    return out


@pytest.mark.parametrize(
    ("status", "mapped"),
    [
        (400, 400),
        (413, 413),
        (415, 415),
        (422, 422),
        (429, 429),
        (503, 503),
        (500, 500),
        (502, 502),
        (504, 504),
        (408, 504),
        (401, 502),
        (403, 502),
        (404, 502),
        (501, 500),
        (599, 500),
        (302, 502),
    ],
)
def test_upstream_status_mapping(status: int, mapped: int) -> None:
    assert upstream_status(status) == mapped


async def test_streams_upstream_sse_chunks_and_usage(upstream: FakeUpstream) -> None:
    engine = OpenAIEngine(upstream.url, api_key="sk-upstream")
    try:
        out = await collect(engine, request(provider={"only": ["x"]}, max_tokens=9))
    finally:
        await engine.aclose()
    *chunks, finished = out
    assert finished == Finished(prompt_tokens=7, completion_tokens=len(WORDS))
    parsed = [json.loads(c) for c in chunks if isinstance(c, bytes)]
    assert len(parsed) == len(chunks) == 1 + len(WORDS) + 1, "role, words, finish; no usage"
    assert parsed[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in parsed)
    assert text == "".join(WORDS)
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    sent = upstream.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 9 and "provider" not in sent, "router-only keys stay home"
    assert upstream.headers[-1]["authorization"] == "Bearer sk-upstream"


async def test_legacy_completions_and_a_v1_base_url(upstream: FakeUpstream) -> None:
    engine = OpenAIEngine(f"{upstream.url}/v1/")
    try:
        out = await collect(engine, request("Once", completions=True))
    finally:
        await engine.aclose()
    texts = [json.loads(c)["choices"][0]["text"] for c in out if isinstance(c, bytes)]
    assert "".join(texts) == "".join(WORDS)
    assert isinstance(out[-1], Finished)


@pytest.mark.parametrize(("status", "mapped"), [(500, 500), (400, 400), (401, 502), (429, 429)])
async def test_upstream_http_error_becomes_engine_error(
    upstream: FakeUpstream, status: int, mapped: int
) -> None:
    engine = OpenAIEngine(upstream.url)
    try:
        with pytest.raises(EngineError) as info:
            await collect(engine, request(f"[[up:status={status}]]"))
    finally:
        await engine.aclose()
    assert info.value.status == mapped
    assert info.value.message == f"upstream {status}: upstream says {status}"


async def test_stream_without_done_is_502(upstream: FakeUpstream) -> None:
    engine = OpenAIEngine(upstream.url)
    try:
        with pytest.raises(EngineError) as info:
            await collect(engine, request("[[up:nodone]]"))
    finally:
        await engine.aclose()
    assert info.value.status == 502


CONTENT_EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'


@contextlib.asynccontextmanager
async def raw_upstream(reply: bytes | None) -> AsyncIterator[str]:
    """A socket-level upstream: reads one request head and writes `reply` (None: says
    nothing at all), then holds the connection open until the client leaves."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            if reply is not None:
                writer.write(reply)
            await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_unreachable_upstream_is_502() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        engine = OpenAIEngine(f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(EngineError) as info:
                await collect(engine, request())
        finally:
            await engine.aclose()
    assert info.value.status == 502
    assert "cannot connect" in info.value.message


@pytest.mark.parametrize(
    "reply",
    [
        None,  # never answers
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",  # head, then silence
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(CONTENT_EVENT), CONTENT_EVENT),  # content, then silence
    ],
    ids=["no-head", "head-only", "mid-stream"],
)
async def test_silent_upstream_times_out_as_504(reply: bytes | None) -> None:
    async with raw_upstream(reply) as url:
        engine = OpenAIEngine(url, timeout_s=0.2)
        try:
            with pytest.raises(EngineError) as info:
                await collect(engine, request())
        finally:
            await engine.aclose()
    assert info.value.status == 504
    assert "timed out" in info.value.message


@pytest.mark.parametrize(
    ("line", "status"),
    [("data: {not json", 502), ('data: {"error": {"message": "oom"}}', 500)],
)
async def test_malformed_or_error_event_mid_stream(line: str, status: int) -> None:
    body = ('data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n' + line + "\n\n").encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}"
    async with raw_upstream(head.encode() + b"\r\n\r\n" + body) as url:
        engine = OpenAIEngine(url)
        seen: list[EngineOutput] = []
        with pytest.raises(EngineError) as info:
            async for out in engine.generate(request()):
                seen.extend(out) if isinstance(out, list) else seen.append(out)
        await engine.aclose()
    # The good chunk before the bad one (same network read) is still delivered first.
    assert len(seen) == 1 and info.value.status == status


async def test_cancel_closes_the_upstream_stream_promptly(upstream: FakeUpstream) -> None:
    engine = OpenAIEngine(upstream.url)
    upstream.reset_slow()
    three = asyncio.Event()
    got: list[EngineOutput] = []

    async def consume() -> None:
        async with contextlib.aclosing(engine.generate(request("[[up:slow]]"))) as outputs:
            async for out in outputs:
                got.append(out)
                if len(got) == 3:
                    three.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(three.wait(), 5)
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # "Does not hang": the upstream sees us go.
        assert await asyncio.to_thread(upstream.slow_gone.wait, 5)
        assert upstream.slow_gone_at is not None and upstream.slow_gone_at >= cancelled_at
    finally:
        await engine.aclose()


async def test_aclose_closes_the_http_client(upstream: FakeUpstream) -> None:
    engine = OpenAIEngine(upstream.url)
    await engine.aclose()
    with pytest.raises(RuntimeError):
        await collect(engine, request())


async def test_e5_upstream_connection_is_reused_across_requests() -> None:
    """The body is read to its end after [DONE], so keep-alive connections are pooled."""
    from bench.upstream import Upstream, UpstreamSettings

    upstream = Upstream(UpstreamSettings(tokens=3))
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await upstream.handle(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = OpenAIEngine(f"http://127.0.0.1:{port}")
    try:
        for _ in range(5):
            out = await collect(engine, request())
            assert isinstance(out[-1], Finished)
        assert upstream.requests == 5
        assert connections == 1
    finally:
        await engine.aclose()
        server.close()
        await server.wait_closed()


async def test_a9_chunks_carry_our_model_id_whatever_the_engine_calls_it() -> None:
    from bench.upstream import Upstream, UpstreamSettings

    upstream = Upstream(UpstreamSettings(tokens=2), model="meta-llama/Some-Model-8B")
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    engine = OpenAIEngine(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        out = await collect(engine, request())
        chunks = [json.loads(c) for c in out if isinstance(c, bytes)]
        assert chunks and {c["model"] for c in chunks} == {"m"}
        assert [c["choices"][0]["delta"].get("content") for c in chunks][1:3] == [" tok0", " tok1"]
    finally:
        await engine.aclose()
        server.close()
        await server.wait_closed()
