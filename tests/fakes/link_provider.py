"""A scripted provider that speaks the real link protocol (register, challenge, sealed
frames) and records every decrypted request body: it shows what a provider really receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.asyncio.client import ClientConnection, connect

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.sealing import KeyPair, SealedChannel


class RecordingProvider:
    def __init__(self, url: str, token: str, provider_id: str, model: str, version: str) -> None:
        self.url, self.token, self.provider_id = url, token, provider_id
        self.model, self.version = model, version
        self.bodies: list[dict[str, object]] = []
        self.registered = threading.Event()
        self._keys = KeyPair.generate()
        self._stop: asyncio.Event | None = None

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with connect(self.url) as ws:
            model = common_pb2.ModelInfo(id=self.model, max_concurrency=4, template_render_ok=True)
            await ws.send(
                link_pb2.Frame(
                    register=link_pb2.Register(
                        provider_id=self.provider_id,
                        version=self.version,
                        models=[model],
                        public_key=self._keys.public_bytes,
                        enrollment_token=self.token,
                    )
                ).SerializeToString()
            )
            reader = asyncio.ensure_future(self._read(ws))
            # Heartbeat like a real provider, or the dispatcher drops us after its
            # (test-shrunk) silence limit whenever the machine is slow.
            while not self._stop.is_set():
                if self.registered.is_set():
                    beat = link_pb2.Frame(
                        heartbeat=link_pb2.Heartbeat(loads=[link_pb2.ModelLoad(model=self.model)])
                    )
                    await ws.send(beat.SerializeToString())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.3)
            reader.cancel()

    async def _read(self, ws: ClientConnection) -> None:
        async for data in ws:
            frame = link_pb2.Frame.FromString(data)
            kind = frame.WhichOneof("kind")
            if kind == "challenge":
                sealed = SealedChannel(self._keys, frame.challenge.dispatcher_public_key).seal(
                    frame.challenge.nonce
                )
                await ws.send(
                    link_pb2.Frame(
                        challenge_response=link_pb2.ChallengeResponse(sealed_nonce=sealed)
                    ).SerializeToString()
                )
            elif kind == "registered":
                self.registered.set()
            elif kind == "request":
                await self._answer(ws, frame.request)

    async def _answer(self, ws: ClientConnection, request: link_pb2.Request) -> None:
        channel = SealedChannel(self._keys, request.session_public_key)
        self.bodies.append(json.loads(channel.open(request.sealed_body)))
        rid = request.request_id
        head = {
            "id": "chatcmpl-rec",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model,
        }
        for delta, finish in (
            ({"role": "assistant", "content": ""}, None),
            ({"content": "recorded"}, None),
            ({}, "stop"),
        ):
            chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            await ws.send(
                link_pb2.Frame(
                    chunk=link_pb2.Chunk(
                        request_id=rid, sealed=[channel.seal(json.dumps(chunk).encode())]
                    )
                ).SerializeToString()
            )
        usage = common_pb2.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
        await ws.send(
            link_pb2.Frame(
                complete=link_pb2.Complete(request_id=rid, usage=usage)
            ).SerializeToString()
        )


@contextmanager
def recording_provider(
    url: str,
    token: str,
    *,
    provider_id: str = "recorder",
    model: str = "hedgerow-sim-1",
    version: str = "0.7.0",
) -> Iterator[RecordingProvider]:
    provider = RecordingProvider(url, token, provider_id, model, version)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(provider._serve(),), daemon=True
    )
    thread.start()
    try:
        assert provider.registered.wait(10), "recording provider did not register"
        yield provider
    finally:
        if provider._stop is not None:
            loop.call_soon_threadsafe(provider._stop.set)
        thread.join(5)
