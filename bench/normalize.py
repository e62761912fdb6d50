"""Normalizer benchmark: microseconds per call of the pure repair (5-tool body, body without
tools) and the added latency of the gRPC hop, measured side by side in one run.

Run: `python -m bench.normalize` (prints a table; numbers vary with machine load)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import grpc
from prometheus_client import CollectorRegistry

from contract import normalizer_pb2, normalizer_pb2_grpc
from contract.schema import normalize_body
from normalizer_svc import server
from normalizer_svc.config import NormalizerConfig


def five_tool_body() -> bytes:
    tools = []
    for i in range(5):
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": f"tool_{i}",
                    "description": "A typical agent tool",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "query": {"type": "string"},
                            "limit": {"type": ["integer", "null"], "default": 10},
                            "mode": {"enum": ["fast", "slow"]},
                            "filters": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "field": {"type": "string"},
                                        "value": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                                    },
                                },
                            },
                        },
                        "required": ["query"],
                    },
                },
            }
        )
    return json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi " * 200}], "tools": tools}
    ).encode()


def plain_body() -> bytes:
    return json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi " * 200}]}
    ).encode()


def per_call_us(body: bytes, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        normalize_body(body)
    return (time.perf_counter() - start) / n * 1e6


async def grpc_us(body: bytes, n: int) -> list[float]:
    running = await server.start(NormalizerConfig(port=0), CollectorRegistry())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = normalizer_pb2_grpc.NormalizerStub(channel)
            request = normalizer_pb2.NormalizeRequest(body=body)
            for _ in range(50):
                await stub.Normalize(request)
            samples = []
            for _ in range(n):
                t = time.perf_counter()
                await stub.Normalize(request)
                samples.append((time.perf_counter() - t) * 1e6)
            return samples
    finally:
        await running.stop(0)


def main() -> None:
    tools, plain = five_tool_body(), plain_body()
    rows = [
        ("pure repair, 5-tool body", per_call_us(tools, 2000)),
        ("pure repair, no tools (byte gate)", per_call_us(plain, 200000)),
    ]
    hop = asyncio.run(grpc_us(tools, 1000))
    print(f"{'measurement':45s} {'us':>10s}")
    for name, value in rows:
        print(f"{name:45s} {value:10.1f}")
    print(f"{'gRPC Normalize, 5-tool body, p50':45s} {statistics.median(hop):10.1f}")
    print(f"{'gRPC Normalize, 5-tool body, p99':45s} {statistics.quantiles(hop, n=100)[98]:10.1f}")
    print(f"{'gRPC hop overhead (p50 - pure)':45s} {statistics.median(hop) - rows[0][1]:10.1f}")


if __name__ == "__main__":
    main()
