"""A fast OpenAI-compatible upstream for benchmarks: raw asyncio HTTP/1.1, keep-alive,
pre-encoded SSE chunks, configurable time to first token and tokens per second. It stands in
for the engine (vLLM, llama.cpp...) so that what a benchmark measures is the router.

`python -m bench.upstream --port 9000 --ttft-ms 20 --tokens-per-s 500 --tokens 32`
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class UpstreamSettings:
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0  # 0 = as fast as possible
    tokens: int = 32
    fail_before_content: bool = False  # role chunk, then the connection drops


def _sse(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Upstream:
    """Answers every request with the same pre-encoded stream. `model` is what the engine
    calls the model: a server started with --served-model-name answers with the name the
    agent sends (the bench providers serve `hedgerow-sim-1`)."""

    def __init__(self, settings: UpstreamSettings, model: str = "hedgerow-sim-1") -> None:
        self.s = settings
        head = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
        }
        self.role = _chunked(
            _sse(
                {
                    **head,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ],
                }
            )
        )
        self.tokens = [
            _chunked(
                _sse(
                    {
                        **head,
                        "choices": [
                            {"index": 0, "delta": {"content": f" tok{i}"}, "finish_reason": None}
                        ],
                    }
                )
            )
            for i in range(settings.tokens)
        ]
        self.tail = (
            _chunked(
                _sse({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            )
            + _chunked(
                _sse(
                    {
                        **head,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": 10,
                            "completion_tokens": settings.tokens,
                            "total_tokens": 10 + settings.tokens,
                        },
                    }
                )
            )
            + _chunked(b"data: [DONE]\n\n")
            + b"0\r\n\r\n"
        )
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                self.requests += 1
                await self._respond(writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" + self.role
        )
        await writer.drain()
        if self.s.fail_before_content:
            raise ConnectionError("simulated upstream death before content")
        if self.s.ttft_s:
            await asyncio.sleep(self.s.ttft_s)
        interval = 1.0 / self.s.tokens_per_s if self.s.tokens_per_s else 0.0
        for i, token in enumerate(self.tokens):
            if interval and i:
                await asyncio.sleep(interval)
            if writer.is_closing():
                return  # the client went away (a cancelled race loser)
            writer.write(token)
            if interval:
                await writer.drain()
        writer.write(self.tail)
        await writer.drain()


async def serve(settings: UpstreamSettings, host: str, port: int) -> None:
    upstream = Upstream(settings)
    server = await asyncio.start_server(upstream.handle, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--fail-before-content", action="store_true")
    ns = parser.parse_args()
    settings = UpstreamSettings(
        ns.ttft_ms / 1000, ns.tokens_per_s, ns.tokens, ns.fail_before_content
    )
    try:
        asyncio.run(serve(settings, ns.host, ns.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
