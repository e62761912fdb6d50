"""`Http1Client` against real sockets: raw `asyncio.start_server` servers on 127.0.0.1 port
0, so every test controls the exact bytes on the wire and counts connections, requests and
the client's closes itself."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from provider_agent.engines import http1
from provider_agent.engines.http1 import Http1Client, HttpError, HttpTimeout

# A broken client tends to hang rather than fail: bound every test.
pytestmark = pytest.mark.timeout(10)

WAIT_S = 5.0  # only a bound on waiting for an event that should come; never a measurement


@dataclass
class Request:
    conn: int  # index of the connection it came on
    line: str
    headers: dict[str, str]
    raw_head: bytes
    body: bytes


@dataclass
class Conn:
    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    server: RawServer
    eof: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self) -> Request | None:
        """The next request on this connection, or None once the client closed it."""
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return None
        lines = raw[:-4].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        request = Request(self.index, lines[0], headers, raw, body)
        self.server.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_eof(self) -> None:
        """Read (and drop) whatever comes until the client closes the connection."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.eof.set()

    def reset(self) -> None:
        """Close with a TCP RST rather than a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Handler = Callable[[Conn], Awaitable[None]]


@dataclass
class RawServer:
    handler: Handler
    port: int = 0
    conns: list[Conn] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        conn = Conn(len(self.conns), reader, writer, self)
        self.conns.append(conn)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # torn down with the test: a cancelled task here is logged as an error
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    state = RawServer(handler)
    server = await asyncio.start_server(state._accept, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in state.tasks:
            task.cancel()
        await asyncio.gather(*state.tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def http_client(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    read_timeout_s: float = 5.0,
    max_idle: int = 64,
) -> AsyncIterator[Http1Client]:
    client = Http1Client(url, headers=headers, read_timeout_s=read_timeout_s, max_idle=max_idle)
    try:
        yield client
    finally:
        await client.aclose()


def ok(body: bytes = b"ok", *extra: str) -> bytes:
    head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
    head += "".join(f"{h}\r\n" for h in extra)
    return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


def keep_alive(response: Callable[[Request], bytes]) -> Handler:
    """Answer every request on the connection with `response(request)` until EOF."""

    async def handler(conn: Conn) -> None:
        while (request := await conn.request()) is not None:
            await conn.send(response(request))

    return handler


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT_S)


async def post_read(client: Http1Client, path: str = "/x", body: bytes = b"{}") -> bytes:
    async with client.post(path, body) as response:
        assert response.status == 200
        return await response.read()


# --- the request ---------------------------------------------------------------------


async def test_post_sends_exact_request() -> None:
    async with raw_server(keep_alive(lambda _: ok(b"fine"))) as srv:
        body = '{"model":"m","messages":[{"role":"user","content":"héllo"}]}'.encode()
        headers = {"authorization": "Bearer sk-1", "accept": "text/event-stream"}
        async with http_client(srv.url + "/v1/", headers=headers) as client:
            async with client.post("/chat/completions", body) as response:
                assert response.status == 200
                assert response.headers["content-type"] == "text/plain"
                assert await response.read() == b"fine"
            async with client.post("/completions", b"abc", content_type="text/x-foo") as r2:
                assert await r2.read() == b"fine"
    first, second = srv.requests
    assert first.line == "POST /v1/chat/completions HTTP/1.1"
    assert first.headers["host"] == f"127.0.0.1:{srv.port}"
    assert first.headers["content-type"] == "application/json"
    assert first.headers["content-length"] == str(len(body))
    assert first.headers["authorization"] == "Bearer sk-1"
    assert first.headers["accept"] == "text/event-stream"
    assert first.body == body
    # the base path joined to the path, and the host header sent exactly once
    assert first.raw_head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert first.raw_head.count(b"\r\nhost:") == 1
    assert second.line == "POST /v1/completions HTTP/1.1"
    assert second.headers["content-type"] == "text/x-foo"
    assert second.headers["content-length"] == "3"
    assert second.body == b"abc"


async def test_post_without_base_path() -> None:
    async with raw_server(keep_alive(lambda _: ok())) as srv:
        async with http_client(srv.url) as client:
            assert await post_read(client, "/v1/models", b"") == b"ok"
    (request,) = srv.requests
    assert request.line == "POST /v1/models HTTP/1.1"
    assert request.headers["content-length"] == "0"
    assert request.body == b""


# --- response bodies -----------------------------------------------------------------


async def test_content_length_body_is_streamed_as_it_arrives() -> None:
    first_seen = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await wait(first_seen)  # the rest only once the client has the first part
        await conn.send(b"world")
        await conn.wait_eof()

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        async with client.post("/x", b"{}") as response:
            parts = []
            async for part in response.stream():
                parts.append(part)
                first_seen.set()
        assert parts[0] == b"hello"
        assert b"".join(parts) == b"helloworld"


async def test_content_length_body_read_whole() -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: several socket reads
    async with raw_server(keep_alive(lambda _: ok(big))) as srv:
        async with http_client(srv.url) as client:
            assert await post_read(client) == big
            assert await post_read(client) == big
    assert len(srv.conns) == 1


async def test_content_length_body_cut_short_raises() -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        conn.writer.close()

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        async with client.post("/x", b"{}") as response:
            with pytest.raises(HttpError):
                await response.read()


async def test_chunked_body() -> None:
    events = [b'data: {"n":%d}\n\n' % i for i in range(20)]
    wire = CHUNKED_HEAD + chunked(*events)

    async def handler(conn: Conn) -> None:
        while await conn.request() is not None:
            for k in range(0, len(wire), 7):  # in awkward pieces
                await conn.send(wire[k : k + 7])

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        assert await post_read(client) == b"".join(events)
        assert await post_read(client) == b"".join(events)
    assert len(srv.conns) == 1  # read to its terminator, so pooled


async def test_chunked_body_is_streamed_as_it_arrives() -> None:
    first_seen = asyncio.Event()

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(CHUNKED_HEAD + b"5\r\nhello\r\n")
        await wait(first_seen)
        await conn.send(b"5\r\nworld\r\n0\r\n\r\n")
        await conn.wait_eof()

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        async with client.post("/x", b"{}") as response:
            parts = []
            async for part in response.stream():
                parts.append(part)
                first_seen.set()
    assert parts == [b"hello", b"world"]


async def test_chunked_body_cut_short_raises() -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(CHUNKED_HEAD + b"5\r\nhello\r\n")
        conn.writer.close()

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        async with client.post("/x", b"{}") as response:
            with pytest.raises(HttpError):
                await response.read()


async def test_body_until_close() -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        if conn.index == 0:
            await conn.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ")
            await conn.send(b"the end")
            conn.writer.close()
        else:
            await conn.send(ok())
            await conn.wait_eof()

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        assert await post_read(client) == b"until the end"
        assert await post_read(client) == b"ok"
    assert len(srv.conns) == 2  # the first connection was not pooled


async def test_204_without_body_reuses_connection() -> None:
    async with raw_server(keep_alive(lambda _: b"HTTP/1.1 204 No Content\r\n\r\n")) as srv:
        async with http_client(srv.url) as client:
            async with client.post("/x", b"{}") as response:
                assert response.status == 204
                assert await response.read() == b""
            async with client.post("/x", b"{}") as response:
                assert response.status == 204  # body not even read: there is none
            async with client.post("/x", b"{}") as response:
                assert await response.read() == b""
    assert len(srv.requests) == 3
    assert len(srv.conns) == 1


async def test_interim_100_continue_is_skipped() -> None:
    interim = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
    )
    async with raw_server(keep_alive(lambda _: interim + ok(b"real", "x-final: 1"))) as srv:
        async with http_client(srv.url) as client:
            async with client.post("/x", b"{}") as response:
                assert response.status == 200
                assert response.headers["x-final"] == "1"
                assert "link" not in response.headers
                assert await response.read() == b"real"
            assert await post_read(client) == b"real"
    assert len(srv.conns) == 1


# --- keep-alive and the pool ---------------------------------------------------------


async def test_keep_alive_five_requests_one_connection() -> None:
    async with raw_server(keep_alive(lambda r: ok(r.body[::-1]))) as srv:
        async with http_client(srv.url) as client:
            for i in range(5):
                assert await post_read(client, body=b"req%d" % i) == b"%dqer" % i
    assert len(srv.requests) == 5
    assert len(srv.conns) == 1
    assert {r.conn for r in srv.requests} == {0}


async def test_connection_close_response_is_not_pooled() -> None:
    # The server keeps its side open: only the client can decide not to reuse it.
    async with raw_server(keep_alive(lambda _: ok(b"bye", "connection: close"))) as srv:
        async with http_client(srv.url) as client:
            assert await post_read(client) == b"bye"
            await wait(srv.conns[0].eof)  # the client closed it
            assert await post_read(client) == b"bye"
    assert len(srv.conns) == 2
    assert [r.conn for r in srv.requests] == [0, 1]


async def test_leaving_before_body_closes_connection() -> None:
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
            await conn.wait_eof()
        else:
            await keep_alive(lambda _: ok())(conn)

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        async with client.post("/x", b"{}") as response:
            assert response.status == 200
        await wait(srv.conns[0].eof)  # closed, not left dangling in the pool
        assert await post_read(client) == b"ok"
        assert await post_read(client) == b"ok"
    assert len(srv.conns) == 2
    assert [r.conn for r in srv.requests] == [0, 1, 1]


async def test_leaving_mid_stream_closes_connection() -> None:
    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.send(CHUNKED_HEAD + b"5\r\nhello\r\n")
            await conn.wait_eof()
        else:
            await keep_alive(lambda _: ok())(conn)

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        async with client.post("/x", b"{}") as response:
            async for part in response.stream():
                assert part == b"hello"
                break
        await wait(srv.conns[0].eof)
        assert await post_read(client) == b"ok"
    assert len(srv.conns) == 2


async def test_stale_idle_connection_closed_by_server() -> None:
    closed = asyncio.Event()

    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.send(ok(b"one"))
            conn.writer.close()  # keep-alive response, then gone while idle
            closed.set()
        else:
            await keep_alive(lambda _: ok(b"two"))(conn)

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        assert await post_read(client) == b"one"
        await wait(closed)
        assert await post_read(client) == b"two"
    assert len(srv.conns) == 2
    assert [r.conn for r in srv.requests] == [0, 1]


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_reused_connection_closed_before_response_is_retried(how: str) -> None:
    """The server reads the second request on the pooled connection and closes it without
    a single response byte (as when the upstream's idle timeout races the request): the
    request is sent once more, on a new connection."""

    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.send(ok(b"one"))
            await conn.request()
            if how == "rst":
                conn.reset()
            else:
                conn.writer.close()
        else:
            await keep_alive(lambda _: ok(b"two"))(conn)

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        assert await post_read(client, body=b"1") == b"one"
        assert await post_read(client, body=b"2") == b"two"
        assert await post_read(client, body=b"3") == b"two"
    assert [(r.conn, r.body) for r in srv.requests] == [(0, b"1"), (0, b"2"), (1, b"2"), (1, b"3")]


async def test_fresh_connection_closed_without_answer_raises() -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        conn.writer.close()

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        with pytest.raises(HttpError):
            async with asyncio.timeout(WAIT_S), client.post("/x", b"{}"):
                pass  # (a client retrying forever would end in TimeoutError instead)
    assert len(srv.requests) == 1
    assert len(srv.conns) == 1


async def test_retry_after_stale_connection_is_only_once() -> None:
    """A reused connection fails, and so does the fresh one it retries on: an error, not a
    loop."""

    async def handler(conn: Conn) -> None:
        await conn.request()
        if conn.index == 0:
            await conn.send(ok())
            await conn.request()
        conn.writer.close()

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        assert await post_read(client) == b"ok"
        with pytest.raises(HttpError):
            await post_read(client)
    assert [r.conn for r in srv.requests] == [0, 0, 1]
    assert len(srv.conns) == 2


@pytest.mark.parametrize(
    ("sent", "how"),
    [
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-", "fin", id="partial-head-fin"),
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-", "rst", id="partial-head-rst"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n", "fin", id="interim-then-fin"),
    ],
)
async def test_reused_connection_dying_mid_response_is_not_retried(sent: bytes, how: str) -> None:
    """The upstream got the POST on a pooled connection and began to answer before the
    connection died: sending the POST again would run it twice, so this is an error."""

    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.send(ok(b"one"))
            await conn.request()
            await conn.send(sent)
            if how == "rst":
                conn.reset()
            else:
                conn.writer.close()
        else:
            await keep_alive(lambda _: ok(b"two"))(conn)

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        assert await post_read(client) == b"one"
        with pytest.raises(HttpError):
            await post_read(client)
    assert len(srv.requests) == 2  # the second POST reached the upstream once
    assert len(srv.conns) == 1


async def test_max_idle_bounds_the_pool() -> None:
    async with raw_server(keep_alive(lambda _: ok())) as srv:
        async with http_client(srv.url, max_idle=1) as client:
            for _ in range(2):
                # two connections in use at once, both then released with the body read
                async with client.post("/x", b"{}") as r1:
                    async with client.post("/x", b"{}") as r2:
                        assert await r2.read() == b"ok"
                    assert await r1.read() == b"ok"
            # only one of the first pair was kept, so the second pair needed a new one
            assert len(srv.conns) == 3
            assert sum(c.eof.is_set() for c in srv.conns) >= 1
            assert await post_read(client) == b"ok"
            assert len(srv.conns) == 3


# --- errors --------------------------------------------------------------------------


async def test_head_larger_than_limit_raises() -> None:
    huge = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (65 * 1024) + b"\r\n\r\nok"  # > 64 KiB
    async with raw_server(keep_alive(lambda _: huge)) as srv, http_client(srv.url) as client:
        with pytest.raises(HttpError):
            async with client.post("/x", b"{}"):
                pass
    assert len(srv.requests) == 1  # not retried


async def test_large_head_under_limit_is_fine() -> None:
    padding = "a" * 1000
    extra = [f"x-h{i}: {padding}" for i in range(40)]  # ~40 KiB of headers
    async with raw_server(keep_alive(lambda _: ok(b"ok", *extra))) as srv:
        async with http_client(srv.url) as client:
            async with client.post("/x", b"{}") as response:
                assert response.headers["x-h39"] == padding
                assert await response.read() == b"ok"


@pytest.mark.parametrize(
    "head",
    [
        b"FOO BAR\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
    ],
)
async def test_garbage_response_head_raises(head: bytes) -> None:
    async with raw_server(keep_alive(lambda _: head)) as srv, http_client(srv.url) as client:
        with pytest.raises(HttpError):
            async with client.post("/x", b"{}"):
                pass
    assert len(srv.requests) == 1


async def test_read_timeout_in_body() -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await conn.wait_eof()

    async with raw_server(handler) as srv:
        async with http_client(srv.url) as client:
            async with client.post("/x", b"{}") as response:
                assert response.status == 200
                # short only now, so a slow head on a busy machine cannot trip it
                client.read_timeout_s = 0.2
                parts: list[bytes] = []
                with pytest.raises(HttpTimeout):
                    async for part in response.stream():
                        parts.append(part)
                assert parts == [b"abc"]  # what came is handed on before the silence
        await wait(srv.conns[0].eof)  # the timed-out connection is closed, not pooled


async def test_read_timeout_waiting_for_head() -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.wait_eof()

    async with raw_server(handler) as srv:
        async with http_client(srv.url, read_timeout_s=0.2) as client:
            with pytest.raises(HttpTimeout):
                async with client.post("/x", b"{}"):
                    pass
        await wait(srv.conns[0].eof)
    assert len(srv.requests) == 1


async def test_connect_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        async with http_client(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(HttpError) as caught:
                async with client.post("/x", b"{}"):
                    pass
    assert not isinstance(caught.value, HttpTimeout)


async def test_aclose_closes_idle_connections() -> None:
    async with raw_server(keep_alive(lambda _: ok())) as srv:
        client = Http1Client(srv.url)
        # `response` stays referenced to the end, and so does its connection: the EOF
        # below comes from aclose(), not from the garbage collector dropping the socket
        async with client.post("/x", b"{}") as response:
            assert await response.read() == b"ok"
        assert not srv.conns[0].eof.is_set()
        await client.aclose()
        await wait(srv.conns[0].eof)
        with pytest.raises(RuntimeError):
            async with client.post("/x", b"{}"):
                pass
    assert len(srv.requests) == 1
    assert len(srv.conns) == 1


async def test_response_released_after_aclose_is_closed() -> None:
    async with raw_server(keep_alive(lambda _: ok())) as srv:
        client = Http1Client(srv.url)
        async with client.post("/x", b"{}") as response:
            assert await response.read() == b"ok"
            await client.aclose()
        # read to its end, but the client is closed: not pooled (and leaked), closed
        await wait(srv.conns[0].eof)


async def test_a_connection_that_dies_late_is_not_sent_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a pooled connection that fails at once is taken for one closed while idle; one
    that dies after the window may have run the POST, so it is an error, never a resend."""
    monkeypatch.setattr(http1, "STALE_RETRY_WINDOW_S", 0.0)

    async def handler(conn: Conn) -> None:
        if conn.index == 0:
            await conn.request()
            await conn.send(ok(b"one"))
            await conn.request()
            conn.writer.close()
        else:
            await keep_alive(lambda _: ok(b"two"))(conn)

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        assert await post_read(client, body=b"1") == b"one"
        with pytest.raises(HttpError):
            await post_read(client, body=b"2")
    assert [r.body for r in srv.requests] == [b"1", b"2"]


@pytest.mark.parametrize("length", [b"-1", b"+5", b"1e3"])
async def test_a_malformed_content_length_is_an_error(length: bytes) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: " + length + b"\r\n\r\nhello")

    async with raw_server(handler) as srv, http_client(srv.url) as client:
        with pytest.raises(HttpError):
            await post_read(client)
