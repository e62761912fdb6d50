"""Many lightweight simulated providers from one process: real link protocol (register,
challenge, heartbeats), no engine. Used by the scale scenario."""

from __future__ import annotations

import asyncio
import statistics
import time

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.link import CLOSE_TRY_AGAIN
from contract.sealing import KeyPair, SealedChannel
from dispatcher_svc.registry_client import GrpcRegistry
from stack.launcher import ENROLLMENT_TOKEN, Stack
from svckit.auth import DEV_SERVICE_TOKEN, ServiceAuth, aio_channel

MODEL = "hedgerow-sim-1"


async def fake_provider(
    url: str, provider_id: str, registered: asyncio.Event, stop: asyncio.Event
) -> None:
    """One provider; like the real agent it comes back when the door says "try again
    later" (1013: too many handshakes in progress)."""
    keys = KeyPair.generate()
    for attempt in range(50):
        try:
            await _serve(url, provider_id, keys, registered, stop)
            return
        except ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != CLOSE_TRY_AGAIN:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise RuntimeError(f"{provider_id} was never let in")


async def _serve(
    url: str, provider_id: str, keys: KeyPair, registered: asyncio.Event, stop: asyncio.Event
) -> None:
    async with connect(url, ping_interval=None) as ws:
        await ws.send(
            link_pb2.Frame(
                register=link_pb2.Register(
                    provider_id=provider_id,
                    version="0.7.0",
                    public_key=keys.public_bytes,
                    enrollment_token=ENROLLMENT_TOKEN,
                    decode_tps=100.0,
                    models=[
                        common_pb2.ModelInfo(id=MODEL, max_concurrency=4, template_render_ok=True)
                    ],
                )
            ).SerializeToString()
        )
        reader = asyncio.ensure_future(_read(ws, keys, registered))
        await registered.wait()
        while not stop.is_set():
            await ws.send(
                link_pb2.Frame(
                    heartbeat=link_pb2.Heartbeat(loads=[link_pb2.ModelLoad(model=MODEL)])
                ).SerializeToString()
            )
            try:
                await asyncio.wait_for(stop.wait(), 5.0)
            except TimeoutError:
                pass
        reader.cancel()


async def _read(ws: ClientConnection, keys: KeyPair, registered: asyncio.Event) -> None:
    async for data in ws:
        frame = link_pb2.Frame.FromString(data)
        kind = frame.WhichOneof("kind")
        if kind == "challenge":
            sealed = SealedChannel(keys, frame.challenge.dispatcher_public_key).seal(
                frame.challenge.nonce
            )
            await ws.send(
                link_pb2.Frame(
                    challenge_response=link_pb2.ChallengeResponse(sealed_nonce=sealed)
                ).SerializeToString()
            )
        elif kind == "registered":
            registered.set()


async def measure_fleet(stack: Stack, count: int, samples: int = 300) -> tuple[float, float]:
    """Connect `count` providers, then time Reserve+Release as the dispatcher makes them
    (over its Slots stream to the registry): (p50, p99) ms."""
    stop = asyncio.Event()
    events = [asyncio.Event() for _ in range(count)]
    tasks = []
    for i in range(count):
        tasks.append(
            asyncio.ensure_future(fake_provider(stack.link_url, f"fleet-{i:05d}", events[i], stop))
        )
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not stampede the dispatcher's accept loop
    async with asyncio.timeout(120):
        await asyncio.gather(*(e.wait() for e in events))
    print(f"  scale: {count} providers registered", flush=True)
    timings: list[float] = []
    async with aio_channel(stack.registry_addr, ServiceAuth(DEV_SERVICE_TOKEN), ()) as channel:
        registry = GrpcRegistry(channel)  # the dispatcher's own client: the Slots stream
        try:
            for i in range(samples):
                t = time.perf_counter()
                reservation = await registry.reserve(
                    model=MODEL,
                    traits=common_pb2.Traits(),
                    exclude=(),
                    avoid_version="",
                    allowlist=(),
                    prompt_tokens=1,
                    max_tokens=16,
                    may_queue=False,
                    timeout_s=5.0,
                    reservation_id=f"bench-{i}",
                )
                await registry.release(reservation.reservation_id, 0)
                timings.append((time.perf_counter() - t) * 1000)
        finally:
            await registry.aclose()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return statistics.median(timings), statistics.quantiles(timings, n=100)[98]
