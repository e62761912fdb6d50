"""The HTTP edge against hostile clients, at the socket: the real gateway app under uvicorn
with the edge's protocol (as `python -m gateway` runs it), fake backends behind it.

A12 read deadlines and the connection limit, A13 request ids, A14 per-key concurrency
(released however a request ends), A15 quiet logs, A16 numbers through HTTP, A17
/v1/models and /readyz."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import grpc
import httpx
import pytest

from tests.fakes.gateway import KEY, OTHER_KEY, RunningGateway, rpc_error, running_gateway

AUTH = {"Authorization": f"Bearer {KEY}"}
HALF_HEADERS = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Half: "


def chat(text: str = "hi", **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}], **extra}


async def get(gw: RunningGateway, path: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.url) as client:
        return await client.get(path, **kwargs)  # type: ignore[arg-type]


async def post(gw: RunningGateway, path: str, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.url) as client:
        return await client.post(path, **kwargs)  # type: ignore[arg-type]


async def connect(gw: RunningGateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.port)


async def read_to_eof(reader: asyncio.StreamReader, within_s: float) -> bytes:
    """Everything until the server closes; fails if it stays open past `within_s`."""
    return await asyncio.wait_for(reader.read(), within_s)


def request_bytes(body: bytes, key: str = KEY, path: str = "/v1/chat/completions") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def open_stream(
    gw: RunningGateway, key: str = KEY
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A streaming request the fake dispatcher holds open (its first chunk read)."""
    reader, writer = await connect(gw)
    writer.write(request_bytes(json.dumps(chat("[[hold]]", stream=True)).encode(), key))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200"), head
    return reader, writer


async def wait_for(condition: object, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- A12: read deadlines and the connection limit -------------------------------------


async def test_a12_half_sent_headers_are_answered_408_and_closed_at_the_deadline() -> None:
    async with running_gateway() as gw:
        reader, writer = await connect(gw)
        writer.write(HALF_HEADERS)
        started = time.monotonic()
        answer = await read_to_eof(reader, 3)
        assert answer.startswith(b"HTTP/1.1 408")
        assert 0.4 <= time.monotonic() - started < 1.5
        writer.close()


async def test_a12_a_connection_that_sends_nothing_is_closed_silently() -> None:
    async with running_gateway() as gw:
        reader, writer = await connect(gw)
        assert await read_to_eof(reader, 3) == b""
        writer.close()
        text = (await get(gw, "/metrics")).text
        assert 'gateway_connections_closed_total{reason="header_timeout"} 1.0' in text


async def test_a12_headers_trickled_byte_by_byte_still_meet_the_deadline() -> None:
    async with running_gateway() as gw:
        reader, writer = await connect(gw)
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):
            for byte in HALF_HEADERS * 20:  # each byte well inside any idle timeout
                if reader.at_eof() or time.monotonic() - started > 3:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.01)
            await read_to_eof(reader, 3)
        assert time.monotonic() - started < 1.5
        writer.close()


async def test_a12_a_stalled_body_is_closed_at_its_idle_deadline() -> None:
    async with running_gateway() as gw:
        reader, writer = await connect(gw)
        body = json.dumps(chat()).encode()
        writer.write(request_bytes(body)[: -len(body) // 2])  # half the body, then nothing
        started = time.monotonic()
        assert await read_to_eof(reader, 3) == b""
        assert time.monotonic() - started < 1.5
        writer.close()
        await wait_for(lambda: gw.gateway.concurrency.in_flight(KEY) == 0)


async def test_a12_headers_over_the_cap_are_431() -> None:
    async with running_gateway(max_header_bytes=4096) as gw:
        reader, writer = await connect(gw)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        answer = await read_to_eof(reader, 3)
        assert answer.startswith(b"HTTP/1.1 431")
        writer.close()
        # Large headers under the cap, and a body of any size, are fine.
        ok = await get(gw, "/healthz", headers={"X-Pad": "a" * 3000})
        assert ok.status_code == 200
        big = await post(
            gw,
            "/v1/chat/completions",
            headers=AUTH,
            json=chat("x" * 200_000),
        )
        assert big.status_code == 200


async def test_a12_at_the_limit_stalled_connections_give_way_to_real_requests() -> None:
    async with running_gateway(max_connections=10, header_timeout_s=30) as gw:
        stalled = []
        for _ in range(40):
            reader, writer = await connect(gw)
            writer.write(HALF_HEADERS)
            stalled.append((reader, writer))
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH) as client:
            for _ in range(10):
                r = await client.post("/v1/chat/completions", json=chat())
                assert r.status_code == 200
                assert gw.app.guard.open_count <= 10
        await asyncio.sleep(0.1)
        closed = sum(1 for reader, _ in stalled if reader.at_eof())
        assert closed >= 30, "the oldest stalled connections were closed to make room"
        for _, writer in stalled:
            writer.close()


async def test_a12_at_the_limit_with_every_connection_busy_a_new_one_gets_a_quick_503() -> None:
    async with running_gateway(max_connections=2, key_concurrency=0) as gw:
        streams = [await open_stream(gw), await open_stream(gw)]
        reader, writer = await connect(gw)
        answer = await read_to_eof(reader, 2)
        assert answer.startswith(b"HTTP/1.1 503")
        assert b"retry-after: 1" in answer.lower()
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == (
            "service_unavailable"
        )
        writer.close()
        for _, stream_writer in streams:
            stream_writer.close()
        await wait_for(lambda: gw.app.guard.open_count == 0)
        assert (await get(gw, "/healthz")).status_code == 200


# --- A14: per-key concurrency ------------------------------------------------------------


async def test_a14_a_key_over_its_concurrency_gets_429_before_its_body_is_read() -> None:
    async with running_gateway(key_concurrency=2) as gw:
        streams = [await open_stream(gw), await open_stream(gw)]
        reader, writer = await connect(gw)
        # Headers only: the answer must not wait for a body that never comes.
        writer.write(request_bytes(b"x" * 1000)[:-1000])
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        assert head.startswith(b"HTTP/1.1 429")
        assert b"retry-after: 1" in head.lower()
        writer.close()
        async with httpx.AsyncClient(base_url=gw.url) as client:
            other = await client.post(
                "/v1/chat/completions",
                json=chat(),
                headers={"Authorization": f"Bearer {OTHER_KEY}"},
            )
            assert other.status_code == 200
            refused = await client.post("/v1/chat/completions", json=chat(), headers=AUTH)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        for _, stream_writer in streams:
            stream_writer.close()
        await wait_for(lambda: gw.gateway.concurrency.in_flight(KEY) == 0)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (chat(), 200),
        (chat(stream=True), 200),
        (chat("[[fail]]"), 503),
        (chat("[[stream_error]]"), 502),
        (chat("[[stream_error]]", stream=True), 200),
        ({"model": "m"}, 400),
        (chat(max_tokens=2**63), 400),
    ],
)
async def test_a14_the_place_is_given_back_when_the_request_ends(
    body: dict[str, object], status: int
) -> None:
    async with running_gateway(key_concurrency=1) as gw:
        async with httpx.AsyncClient(base_url=gw.url, headers=AUTH) as client:
            for _ in range(3):  # with a limit of 1, a place not given back shows at once
                r = await client.post("/v1/chat/completions", json=body)
                assert r.status_code == status, r.text
                assert gw.gateway.concurrency.in_flight(KEY) == 0


async def test_a14_the_place_is_given_back_when_the_client_leaves_mid_stream() -> None:
    async with running_gateway(key_concurrency=1) as gw:
        _reader, writer = await open_stream(gw)
        assert gw.gateway.concurrency.in_flight(KEY) == 1
        writer.close()
        await wait_for(lambda: gw.gateway.concurrency.in_flight(KEY) == 0)
        await wait_for(lambda: gw.fakes.dispatches.calls[0].cancelled.is_set())


async def test_a14_the_place_is_given_back_when_the_client_leaves_before_commit() -> None:
    async with running_gateway(key_concurrency=1) as gw:
        _reader, writer = await connect(gw)
        body = json.dumps(chat()).encode()
        writer.write(request_bytes(body)[:-5])
        await wait_for(lambda: gw.gateway.concurrency.in_flight(KEY) == 1)
        writer.close()
        await wait_for(lambda: gw.gateway.concurrency.in_flight(KEY) == 0)


# --- A13: request ids ------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a" * 129, "has space", 'quote"d', "semi;colon", "x" * 8000, "é"])
async def test_a13_a_bad_request_id_is_replaced_never_echoed_forwarded_or_logged(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_gateway() as gw:
        # Bytes: httpx sends them as they are.
        headers = [(b"authorization", f"Bearer {KEY}".encode()), (b"x-request-id", bad.encode())]
        async with httpx.AsyncClient(base_url=gw.url) as client:
            ok = await client.post("/v1/chat/completions", json=chat(), headers=headers)
            refused = await client.post("/v1/chat/completions", json={}, headers=headers)
        for r in (ok, refused):
            assert r.headers["x-request-id"].startswith("req_")
            assert len(r.headers["x-request-id"]) == 36
        assert gw.fakes.dispatches.started[0].request_id == ok.headers["x-request-id"]
    assert bad not in caplog.text


async def test_a13_a_good_request_id_is_echoed_and_forwarded() -> None:
    async with running_gateway() as gw:
        headers = {**AUTH, "X-Request-Id": "client:run-7.step_2"}
        r = await post(gw, "/v1/chat/completions", json=chat(), headers=headers)
        assert r.headers["x-request-id"] == "client:run-7.step_2"
        assert gw.fakes.dispatches.started[0].request_id == "client:run-7.step_2"


# --- A15: quiet logs -------------------------------------------------------------------


async def test_a15_the_access_log_has_paths_never_query_strings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running_gateway() as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            await client.get("/healthz?api_key=sk-secret-1")
            await client.post("/v1/chat/completions?key=sk-secret-2", json=chat(), headers=AUTH)
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) >= 2
    lines = [r.getMessage() for r in access]
    assert any("/healthz" in line for line in lines)
    assert any("/v1/chat/completions" in line for line in lines)
    ours = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert not any("sk-secret" in r.getMessage() for r in ours)


async def test_a15_a_client_leaving_is_one_info_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_gateway() as gw:
        # Mid-stream, then mid-body.
        _, writer = await open_stream(gw)
        writer.close()
        await wait_for(lambda: gw.gateway.concurrency.in_flight(KEY) == 0)
        _reader, writer = await connect(gw)
        body = json.dumps(chat()).encode()
        writer.write(request_bytes(body)[:-5])
        await wait_for(lambda: gw.gateway.concurrency.in_flight(KEY) == 1)
        writer.close()
        await wait_for(lambda: gw.gateway.concurrency.in_flight(KEY) == 0)
        await asyncio.sleep(0.05)
    gone = [r for r in caplog.records if r.getMessage() == "client disconnected"]
    assert [r.levelno for r in gone] == [logging.INFO, logging.INFO]
    assert {getattr(r, "when", None) for r in gone} == {"during the stream", "before the answer"}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert all(r.exc_info is None for r in caplog.records)


# --- A16 through HTTP ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":NaN}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":Infinity}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1e999}',
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":9223372036854775808}',
    ],
)
async def test_a16_non_finite_and_huge_numbers_are_400_through_http(raw: bytes) -> None:
    async with running_gateway() as gw:
        r = await post(
            gw,
            "/v1/chat/completions",
            content=raw,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_request"
        assert gw.fakes.dispatches.started == []


# --- A17: /v1/models and /readyz -------------------------------------------------------


async def test_a17_a_registry_that_cannot_answer_the_model_list_is_a_clear_503() -> None:
    async with running_gateway() as gw:
        cases = {
            grpc.StatusCode.RESOURCE_EXHAUSTED: "too large",
            grpc.StatusCode.DEADLINE_EXCEEDED: "in time",
            grpc.StatusCode.UNAVAILABLE: "unreachable",
        }
        for code, words in cases.items():
            gw.fakes.registry.error = rpc_error(code)
            r = await get(gw, "/v1/models", headers=AUTH)
            assert r.status_code == 503
            assert r.headers["retry-after"] == "2"
            error = r.json()["error"]
            assert error["code"] == "service_unavailable"
            assert (
                error["message"].startswith("model list unavailable") and words in error["message"]
            )


async def test_a17_the_model_list_is_capped_and_holds_only_plausible_ids() -> None:
    async with running_gateway(max_listed_models=100) as gw:
        junk = ["", "has space", "line\nbreak", "x" * 300, "ünï"]
        gw.fakes.registry.models = [*junk, "org/model-a:7b", "org/model-a:7b"] + [
            f"m{i:06d}" for i in range(100_000)
        ]
        r = await get(gw, "/v1/models", headers=AUTH)
        assert r.status_code == 200
        ids = [m["id"] for m in r.json()["data"]]
        assert len(ids) == 100
        assert ids[0] == "org/model-a:7b" and ids[1] == "m000000"
        assert not set(junk) & set(ids)


async def test_a17_readyz_asks_the_grpc_health_of_registry_and_dispatcher() -> None:
    async with running_gateway() as gw:
        gw.fakes.registry.error = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED)
        r = await get(gw, "/readyz")
        assert r.status_code == 200, "a model list too large to send is not unreadiness"
        gw.fakes.health["dispatcher"].serving = False
        r = await get(gw, "/readyz")
        assert r.status_code == 503
        assert r.json()["services"] == {"registry": "serving", "dispatcher": "not serving"}
        gw.fakes.health["dispatcher"].serving = True
        gw.fakes.health["registry"].error = rpc_error(grpc.StatusCode.UNAVAILABLE)
        r = await get(gw, "/readyz")
        assert r.status_code == 503
        assert r.json()["services"]["registry"] == "not serving"
