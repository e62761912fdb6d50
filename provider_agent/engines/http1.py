"""A small streaming HTTP/1.1 client for the `openai` engine's one job: POST a JSON body to
one upstream and stream the response back, over pooled keep-alive connections.

General clients (httpx) spend about a millisecond per request in their own machinery on
this path, which is most of what a router adds to time to first token; this one does only
what an OpenAI-compatible upstream needs: `http://` and `https://`, `Content-Length` and
chunked response bodies (and bodies that end with the connection), a connect timeout and a
timeout between reads. Every body byte is handed on as soon as it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

READ_SIZE = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_CHUNK_LINE = 1024
# A pooled connection that fails sooner than this after the request was written is taken
# for one the upstream had closed while idle (and the request is sent again, once).
STALE_RETRY_WINDOW_S = 0.25
_HEX_DIGITS = b"0123456789abcdefABCDEF"


class HttpError(Exception):
    """The exchange failed: connection refused or reset, or the upstream broke HTTP."""


class HttpTimeout(HttpError):
    """Connecting took longer than the connect timeout, or the upstream went silent for
    longer than the read timeout."""


class _NoResponse(HttpError):
    """The connection ended before a single response byte."""


class ChunkedDecoder:
    """Incremental decoder of a `Transfer-Encoding: chunked` body (RFC 9112 section 7.1).

    `feed()` takes whatever the socket gave and returns the body bytes now complete; `done`
    is set once the last chunk (and its trailer section) has been read. Extensions and
    trailers are skipped. Raises HttpError on anything malformed."""

    __slots__ = ("_buffer", "_remaining", "_state", "done")

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0  # data bytes left in the current chunk
        self._state = "size"  # size | data | data_end | trailer
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        pos = 0
        while not self.done:
            if self._state == "data":
                take = min(self._remaining, len(buf) - pos)
                if take == 0:
                    break
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if self._remaining:
                    break
                self._state = "data_end"
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_CHUNK_LINE:
                    raise HttpError("chunk line too long")
                break
            line = buf[pos:end]
            pos = end + 2
            if self._state == "data_end":
                if line:
                    raise HttpError("chunk data not followed by CRLF")
                self._state = "size"
            elif self._state == "size":
                size_text = line.split(b";", 1)[0].strip()
                if not size_text or size_text.strip(_HEX_DIGITS):
                    raise HttpError(f"bad chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                if size == 0:
                    self._state = "trailer"
                else:
                    self._remaining = size
                    self._state = "data"
            elif not line:  # the empty line that ends the trailer section
                self.done = True
        self._buffer = buf[pos:]
        return b"".join(out)


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int
    path: str  # the base path, without a trailing slash

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class _Connection:
    __slots__ = ("reader", "reused", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reused = False

    @property
    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        # abort, not close: an unread response (a cancelled stream) must not be drained,
        # and the upstream should see the connection go at once.
        self.writer.transport.abort()


@dataclass
class Response:
    """One response; iterate `stream()` for the body, or `read()` it whole."""

    status: int
    headers: dict[str, str]
    _conn: _Connection
    _client: Http1Client
    _length: int | None  # Content-Length; None for chunked or until-close bodies
    _chunked: bool
    _complete: bool = False
    _released: bool = field(default=False, repr=False)

    async def stream(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        timeout = self._client.read_timeout_s
        if self._chunked:
            decoder = ChunkedDecoder()
            while not decoder.done:
                data = await _read(reader, timeout)
                if not data:
                    raise HttpError("connection closed inside a chunked body")
                body = decoder.feed(data)
                if body:
                    yield body
            self._complete = True
            return
        remaining = self._length
        while remaining is None or remaining > 0:
            data = await _read(reader, timeout, remaining)
            if not data:
                if remaining is None:
                    break  # the body ends with the connection
                raise HttpError("connection closed before the end of the body")
            if remaining is not None:
                remaining -= len(data)
            yield data
        self._complete = remaining is not None

    async def read(self) -> bytes:
        return b"".join([part async for part in self.stream()])

    def release(self) -> None:
        """Give the connection back to the pool if the body was read to its end and both
        sides keep it alive; otherwise close it."""
        if self._released:
            return
        self._released = True
        keep = self._complete and self.headers.get("connection", "").lower() != "close"
        if keep and self._conn.usable:
            self._client._pool(self._conn)
        else:
            self._conn.close()


async def _read(reader: asyncio.StreamReader, timeout_s: float, limit: int | None = None) -> bytes:
    size = READ_SIZE if limit is None else min(READ_SIZE, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await reader.read(size)
    except TimeoutError:
        raise HttpTimeout(f"no data from the upstream for {timeout_s:g} s") from None
    except OSError as exc:
        raise HttpError(f"connection lost: {exc!r}") from exc


class Http1Client:
    """Pooled connections to one origin. Use `async with client.post(path, body) as r:`."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 600.0,
        max_idle: int = 64,
    ) -> None:
        self.origin = Origin.parse(base_url)
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._max_idle = max_idle
        self._ssl = ssl.create_default_context() if self.origin.scheme == "https" else None
        fixed = {"host": self.origin.host_header, "user-agent": "hedgerow-provider"}
        fixed.update(headers or {})
        self._head_lines = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._idle: list[_Connection] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def post(
        self, path: str, body: bytes, content_type: str = "application/json"
    ) -> AsyncIterator[Response]:
        """POST `body` to the base path + `path`. The connection is pooled again only if
        the caller read the body to its end; leaving early (or an error) closes it."""
        head = (
            f"POST {self.origin.path}{path} HTTP/1.1\r\n{self._head_lines}"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        response = await self._exchange(head + body)
        try:
            yield response
        finally:
            response.release()

    async def _exchange(self, request: bytes) -> Response:
        conn = await self._connection(pooled=True)
        sent = time.monotonic()
        try:
            return await self._send(conn, request)
        except _NoResponse:
            # A pooled connection the upstream closed while idle fails at once, before any
            # response byte: the request never reached it. Send it once more, on a new
            # connection (HTTP clients do the same with idle keep-alives). A connection
            # that dies later, or a new one, may have run the request: no resend.
            if not conn.reused or time.monotonic() - sent > STALE_RETRY_WINDOW_S:
                raise
        return await self._send(await self._connection(pooled=False), request)

    async def _send(self, conn: _Connection, request: bytes) -> Response:
        """Write the request and read the response head; the connection is closed on any
        failure."""
        try:
            conn.writer.write(request)
            try:
                await conn.writer.drain()
            except OSError as exc:
                raise _NoResponse(f"connection lost: {exc!r}") from exc
            return await self._read_head(conn)
        except BaseException:
            conn.close()
            raise

    async def _connection(self, *, pooled: bool) -> _Connection:
        if self._closed:
            raise RuntimeError("client is closed")
        while pooled and self._idle:
            conn = self._idle.pop()
            if conn.usable:
                conn.reused = True
                return conn
            conn.close()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.origin.host,
                    self.origin.port,
                    ssl=self._ssl,
                    limit=MAX_HEAD_BYTES,
                    server_hostname=self.origin.host if self._ssl else None,
                )
        except TimeoutError:
            raise HttpTimeout(f"connect timed out after {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise HttpError(f"cannot connect to {self.origin.host_header}: {exc}") from exc
        return _Connection(reader, writer)

    async def _read_head(self, conn: _Connection, *, answered: bool = False) -> Response:
        """Read a response head. Only a connection that ends before the upstream's first
        byte is `_NoResponse` (safe to send again); after that byte, or after an interim
        response (`answered`), any failure is an HttpError."""
        try:
            async with asyncio.timeout(self.read_timeout_s):
                try:
                    first = await conn.reader.read(1)
                except OSError as exc:
                    if answered:
                        raise HttpError(f"connection lost: {exc!r}") from exc
                    raise _NoResponse(f"connection lost: {exc!r}") from exc
                if not first:
                    if answered:
                        raise HttpError("connection closed after an interim response")
                    raise _NoResponse("connection closed before a response")
                raw = first + await conn.reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise HttpTimeout(f"no response head within {self.read_timeout_s:g} s") from None
        except asyncio.IncompleteReadError as exc:
            raise HttpError("connection closed inside the response head") from exc
        except asyncio.LimitOverrunError as exc:
            raise HttpError("response head too large") from exc
        except OSError as exc:
            raise HttpError(f"connection lost inside the response head: {exc!r}") from exc
        lines = raw[:-4].decode("latin-1").split("\r\n")
        status_line = lines[0].split(" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
            raise HttpError(f"not an HTTP/1.x response: {lines[0][:60]!r}")
        try:
            status = int(status_line[1])
        except ValueError:
            raise HttpError(f"bad status line {lines[0][:60]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(f"bad header line {line[:60]!r}")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            # An interim response (e.g. 100 Continue sent unasked): the real one follows.
            return await self._read_head(conn, answered=True)
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length: int | None = None
        if not chunked and "content-length" in headers:
            value = headers["content-length"]
            if not value.isdigit():
                raise HttpError(f"bad content-length {value[:20]!r}")
            length = int(value)
        if status in (204, 304):
            length = 0
        if length is None and not chunked:
            headers["connection"] = "close"  # the body ends with the connection
        return Response(status, headers, conn, self, length, chunked, _complete=length == 0)

    def _pool(self, conn: _Connection) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            conn.close()
        else:
            self._idle.append(conn)

    async def aclose(self) -> None:
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
