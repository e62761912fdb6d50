"""Issue 19, hostile providers, against the whole stack (real processes, two honest sim
providers) and scripted liars speaking the real link protocol (register, challenge, sealed
frames) from this process:

- (a) a liar that reports a negative `waiting` count and the fastest rates the link allows,
  and answers every request with `Accepted` and nothing more (it once won every request, and
  each then waited out the whole inference timeout): honest traffic keeps succeeding in its
  normal time, each request the liar gets is rescued by the backup at the race point (B5,
  B6), and once its slow samples are recorded the liar gets nothing (C5, B14);
- (b) a provider sending maximal chunks as fast as it can -- a held preamble of them, so
  the step that commits carries them all, together far over the gRPC message limit of the
  gateway's one `Dispatches` stream, which they once broke for every client: requests on
  honest providers streaming through the same gateway meanwhile keep completing, and the
  flood itself arrives whole (B13).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.sealing import KeyPair, SealedChannel
from stack.launcher import API_KEY, ENROLLMENT_TOKEN, Stack
from tests.e2e.conftest import FAST_ENV
from tests.e2e.observe import DispatcherLog, Sse, wait_idle

pytestmark = pytest.mark.e2e
MODEL = "hedgerow-sim-1"
REQUESTS = 45
FLOOD_MODEL = "hedgerow-flood-1"
FLOOD_CHUNKS = 20  # held preamble, then as many content chunks: 2 x 20 MiB
# Chunk text whose plaintext is just under the link's chunk cap (1 MiB, F8).
FLOOD_TEXT = "x" * (1024 * 1024 - 1024)
HOSTILE_ENV = {
    **FAST_ENV,
    "HEDGEROW_TTFT_BASE_S": "2",
    "HEDGEROW_TTFT_PER_TOKEN_S": "0",
    "HEDGEROW_SPECULATIVE_RATIO": "0.25",  # the race point: 0.5 s
    "HEDGEROW_INFERENCE_TIMEOUT_S": "20",  # what a believed Accepted would otherwise hold
    # The flood's whole preamble is held, so the commit step carries all of it at once.
    "HEDGEROW_MAX_HELD_PREAMBLE": str(FLOOD_CHUNKS + 4),
}


class ScriptedProvider:
    """A provider that registers like an agent and answers requests its own way:
    `accepted` says Accepted and nothing more; `flood` sends FLOOD_CHUNKS maximal preamble
    chunks (a role delta and a top-level extra: boilerplate, held, B1), then as many
    maximal content chunks, one frame each, back to back, then Complete. Heartbeats report
    `waiting`."""

    def __init__(self, url: str, provider_id: str, model: str, mode: str, waiting: int) -> None:
        self.url, self.provider_id, self.model = url, provider_id, model
        self.mode, self.waiting = mode, waiting
        self.requests = 0
        self.registered = threading.Event()
        self._keys = KeyPair.generate()
        self._stop: asyncio.Event | None = None

    async def serve(self) -> None:
        self._stop = asyncio.Event()
        async with connect(self.url, max_size=None) as ws:
            info = common_pb2.ModelInfo(id=self.model, max_concurrency=8, template_render_ok=True)
            register = link_pb2.Register(
                provider_id=self.provider_id,
                version="0.7.0",
                models=[info],
                public_key=self._keys.public_bytes,
                enrollment_token=ENROLLMENT_TOKEN,
                decode_tps=1e12,  # the link clamps it; still the fastest anyone may claim
                prefill_tps=1e12,
                hardware="liar",
            )
            await ws.send(link_pb2.Frame(register=register).SerializeToString())
            reader = asyncio.ensure_future(self._read(ws))
            while not self._stop.is_set() and not reader.done():
                if self.registered.is_set():
                    load = link_pb2.ModelLoad(model=self.model, running=-5, waiting=self.waiting)
                    beat = link_pb2.Frame(heartbeat=link_pb2.Heartbeat(loads=[load]))
                    await ws.send(beat.SerializeToString())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.3)
            reader.cancel()

    async def _read(self, ws: ClientConnection) -> None:
        async for data in ws:
            assert isinstance(data, bytes)
            frame = link_pb2.Frame.FromString(data)
            kind = frame.WhichOneof("kind")
            if kind == "challenge":
                sealed = SealedChannel(self._keys, frame.challenge.dispatcher_public_key).seal(
                    frame.challenge.nonce
                )
                response = link_pb2.ChallengeResponse(sealed_nonce=sealed)
                await ws.send(link_pb2.Frame(challenge_response=response).SerializeToString())
            elif kind == "registered":
                self.registered.set()
            elif kind == "request":
                self.requests += 1
                await self._answer(ws, frame.request)

    async def _answer(self, ws: ClientConnection, request: link_pb2.Request) -> None:
        rid = request.request_id
        if self.mode == "accepted":
            accepted = link_pb2.Accepted(request_id=rid)
            await ws.send(link_pb2.Frame(accepted=accepted).SerializeToString())
            return  # and nothing more, ever
        channel = SealedChannel(self._keys, request.session_public_key)
        head = {"id": "chatcmpl-flood", "object": "chat.completion.chunk", "created": 0}
        preamble = {"role": "assistant"}
        for i in range(2 * FLOOD_CHUNKS):
            held = i < FLOOD_CHUNKS
            delta = preamble if held else {"content": FLOOD_TEXT}
            chunk = {**head, "model": self.model, "choices": [{"index": 0, "delta": delta}]}
            if held:
                chunk["obfuscation"] = FLOOD_TEXT
            sealed = channel.seal(json.dumps(chunk).encode())
            frame = link_pb2.Frame(chunk=link_pb2.Chunk(request_id=rid, sealed=[sealed]))
            await ws.send(frame.SerializeToString())
        usage = common_pb2.Usage(prompt_tokens=1, completion_tokens=FLOOD_CHUNKS)
        complete = link_pb2.Complete(request_id=rid, usage=usage)
        await ws.send(link_pb2.Frame(complete=complete).SerializeToString())

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()


@contextlib.contextmanager
def scripted(stack: Stack, provider_id: str, model: str, mode: str) -> Iterator[ScriptedProvider]:
    provider = ScriptedProvider(stack.link_url, provider_id, model, mode, waiting=-1000)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(provider.serve(),))
    thread.daemon = True
    thread.start()
    try:
        assert provider.registered.wait(10), f"{provider_id} did not register"
        stack.wait_providers([provider_id], 10)
        yield provider
    finally:
        loop.call_soon_threadsafe(provider.stop)
        thread.join(5)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack(env=HOSTILE_ENV) as s:
        yield s


def chat(stack: Stack, rid: str, *, model: str = MODEL, max_tokens: int = 4) -> httpx.Response:
    body = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Say hello"}],
    }
    return httpx.post(
        f"{stack.base_url}/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}", "X-Request-Id": rid},
        timeout=30,  # does-not-hang bound: far over anything this test allows
    )


def test_a_an_accepted_forever_liar_with_negative_waiting_gets_few_requests(
    stack: Stack,
) -> None:
    log = DispatcherLog(stack)
    with scripted(stack, "liar", MODEL, "accepted") as liar:
        latencies: list[float] = []
        for i in range(REQUESTS):
            started = time.monotonic()
            reply = chat(stack, f"hostile-a-{i}")
            latencies.append(time.monotonic() - started)
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-provider-id"] in ("sim-a", "sim-b")
            sse = Sse.parse(reply.text)
            assert sse.errors == [] and sse.done == 1 and sse.text
        wait_idle(stack)
        to_liar = [
            i
            for i in range(REQUESTS)
            if any(a.provider == "liar" for a in log.attempts(f"hostile-a-{i}"))
        ]
    # Until 3 slow samples count, the liar looks as good as anyone (its lies are clamped,
    # not believed) and gets a third of the requests; judged by what it did, it gets none
    # while the others can serve. (2 more allow for a slow honest primary raced by it.)
    assert liar.requests == len(to_liar) <= 5, to_liar
    # Each request it got was rescued at the race point, not after the inference timeout.
    assert max(latencies) < 2.0, latencies
    honest = [t for i, t in enumerate(latencies) if i not in to_liar]
    assert statistics.median(honest) < 0.3, honest


def test_b_maximal_chunks_from_one_provider_do_not_break_other_requests(stack: Stack) -> None:
    with scripted(stack, "flooder", FLOOD_MODEL, "flood"), ThreadPoolExecutor(6) as pool:
        # Honest answers streaming for about a second (500 tokens at 500 tokens/s) when the
        # flood arrives: all of them ride the gateway's one Dispatches stream.
        streaming = [pool.submit(chat, stack, f"hostile-b-{i}", max_tokens=500) for i in range(3)]
        time.sleep(0.2)
        floods = [
            pool.submit(chat, stack, f"hostile-flood-{i}", model=FLOOD_MODEL) for i in range(2)
        ]
        flooded = [f.result() for f in floods]
        honest = [f.result() for f in streaming]
        honest += [chat(stack, f"hostile-b-after-{i}") for i in range(3)]
    for reply in honest:
        assert reply.status_code == 200, reply.text
        sse = Sse.parse(reply.text)
        assert sse.errors == [] and sse.done == 1 and sse.text
    for reply in flooded:
        assert reply.status_code == 200, reply.text
        sse = Sse.parse(reply.text)
        assert sse.errors == [] and sse.done == 1
        assert len(sse.text) == FLOOD_CHUNKS * len(FLOOD_TEXT), "the flood arrives whole"
    assert wait_idle(stack).slots_in_use == 0
