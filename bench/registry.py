"""Registry benchmark (issue 4): pure selection cost and Reserve+Release as the dispatcher
makes them (over its Slots stream) with 10, 1 000 and 10 000 registered providers, in one run.

Run: `python -m bench.registry` (prints a table)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

import grpc

from contract import hedgerow_common_pb2 as common_pb2
from dispatcher_svc.registry_client import GrpcRegistry
from registry_svc import server
from registry_svc.config import RegistryConfig
from registry_svc.model import Ask, ModelInfo, Outcome, Provider, RegistrySettings, Traits
from registry_svc.registry import Registry

MODEL = "m"


def fleet(n: int, seed: int = 1) -> list[Provider]:
    rng = random.Random(seed)
    return [
        Provider(
            id=f"p{i:05d}",
            version=rng.choice(["0.6.2", "0.6.3", "0.7.0"]),
            trusted=True,
            decode_tps=rng.uniform(20, 200),
            prefill_tps=rng.uniform(500, 5000),
            models={MODEL: ModelInfo(MODEL, max_concurrency=4, template_render_ok=True)},
        )
        for i in range(n)
    ]


def pure_us(n: int, repeat: int) -> tuple[float, float]:
    registry = Registry(RegistrySettings(), clock=time.monotonic, rng=random.Random(2))
    for p in fleet(n):
        registry.upsert_provider(p)
    ask = Ask(MODEL, Traits(has_tools=True), max_tokens=64)
    start = time.perf_counter()
    for _ in range(repeat):
        registry.select(ask)
    select = (time.perf_counter() - start) / repeat * 1e6

    retry = Ask(MODEL, Traits(has_tools=True), max_tokens=64, may_queue=False)

    async def reserve_release() -> float:
        t = time.perf_counter()
        for _ in range(repeat):
            r = await registry.reserve(retry)
            registry.release(r.id, Outcome(200))
        return (time.perf_counter() - t) / repeat * 1e6

    return select, asyncio.run(reserve_release())


async def grpc_ms(n: int, samples: int) -> tuple[float, float]:
    config = RegistryConfig(port=0)
    core = server.build_registry(config)
    for p in fleet(n):
        core.upsert_provider(p)
    running = await server.start(config, core)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            client = GrpcRegistry(channel)  # the dispatcher's client: the Slots stream
            timings = []
            try:
                for i in range(samples + 20):
                    t = time.perf_counter()
                    reservation = await client.reserve(
                        model=MODEL,
                        traits=common_pb2.Traits(has_tools=True),
                        exclude=(),
                        avoid_version="",
                        allowlist=(),
                        prompt_tokens=0,
                        max_tokens=64,
                        may_queue=True,
                        timeout_s=5.0,
                        reservation_id=f"bench-{i}",
                    )
                    await client.release(reservation.reservation_id, 200)
                    if i >= 20:
                        timings.append((time.perf_counter() - t) * 1000)
            finally:
                await client.aclose()
            return statistics.median(timings), statistics.quantiles(timings, n=100)[98]
    finally:
        await running.stop(0)


def main() -> None:
    print(
        f"{'providers':>10} {'select us':>10} {'reserve+release us':>19} "
        f"{'Slots p50 ms':>12} {'Slots p99 ms':>12}"
    )
    for n in (10, 1000, 10000):
        repeat = 2000 if n <= 10 else (200 if n <= 1000 else 20)
        select, rr = pure_us(n, repeat)
        p50, p99 = asyncio.run(grpc_ms(n, 200 if n <= 1000 else 50))
        print(f"{n:>10} {select:>10.1f} {rr:>19.1f} {p50:>12.2f} {p99:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
