"""Load generator: many concurrent streaming requests over raw asyncio HTTP/1.1 keep-alive
connections (a thin client, so the client is not what is measured). Records per request the
time to first content, end time, bytes, SSE events, status and selected headers."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

CONTENT_MARKER = b"tok0"  # the bench upstream's first content token


@dataclass
class Sample:
    status: int
    ttfc_s: float  # time to first content byte; nan if none
    total_s: float
    nbytes: int
    events: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    samples: list[Sample]
    wall_s: float

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 200 and s.ttfc_s == s.ttfc_s]

    @property
    def errors(self) -> int:
        return len(self.samples) - len(self.ok)

    def ttfc_ms(self, q: float) -> float:
        return quantile([s.ttfc_s * 1000 for s in self.ok], q)

    @property
    def rps(self) -> float:
        return len(self.ok) / self.wall_s

    @property
    def events_per_s(self) -> float:
        return sum(s.events for s in self.ok) / self.wall_s


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    if q == 0.5:
        return statistics.median(values)
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


class Connection:
    """One keep-alive HTTP/1.1 connection issuing POSTs with SSE (chunked) responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Sample:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=2**20
            )
        assert self.reader is not None
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{head}\r\n"
        ).encode() + body
        start = time.perf_counter()
        self.writer.write(request)
        try:
            return await self._read(start)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            return Sample(599, float("nan"), time.perf_counter() - start, 0, 0, {"error": str(exc)})

    async def _read(self, start: float) -> Sample:
        assert self.reader is not None
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
        }
        ttfc = float("nan")
        nbytes = events = 0
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                if ttfc != ttfc and CONTENT_MARKER in data:
                    ttfc = time.perf_counter() - start
                nbytes += size
                events += data.count(b"data: ")
        else:
            data = await self.reader.readexactly(int(headers.get("content-length", "0")))
            nbytes = len(data)
            if CONTENT_MARKER in data:
                ttfc = time.perf_counter() - start
        if headers.get("connection") == "close":
            await self.close()
        return Sample(status, ttfc, time.perf_counter() - start, nbytes, events, headers)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def run_load(
    url: str,
    body: dict[str, object],
    *,
    concurrency: int,
    requests: int,
    api_key: str | None = None,
    timeout_s: float = 120.0,
) -> Result:
    """`requests` POSTs to `url` from `concurrency` connections; returns every sample."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    samples: list[Sample] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        try:
            while remaining > 0:
                remaining -= 1
                samples.append(await conn.post(parts.path, payload, headers))
        finally:
            await conn.close()

    start = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(samples, time.perf_counter() - start)
