"""The provider side of the link: dial, register, prove the key, heartbeat, serve (E1, F1).

Reconnects with jittered exponential backoff; each request runs as its own task so a
`Cancel` frame stops generation at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from protos import hedgerow_common_pb2 as common_pb2
from protos import provider_link_pb2 as link_pb2
from protos.sealing import KeyPair, SealedChannel, SealError
from provider_agent.config import AgentConfig
from provider_agent.engines.base import Accepted, DropConnection, EngineError, Finished
from provider_agent.handler import RequestHandler
from provider_agent.scan import ModelCard

log = logging.getLogger(__name__)
MAX_FRAME_BYTES = 10 * 1024 * 1024


def model_infos(cards: dict[str, ModelCard], max_concurrency: int) -> list[common_pb2.ModelInfo]:
    infos = []
    for card in cards.values():
        info = common_pb2.ModelInfo(
            id=card.id, is_vision=card.is_vision, max_concurrency=max_concurrency
        )
        # Tri-state: absent means "no opinion"; false MUST be encoded (it is the routing signal).
        if card.template_render_ok is not None:
            info.template_render_ok = card.template_render_ok
        if card.cap_system is not None:
            info.cap_system = card.cap_system
        if card.cap_tools is not None:
            info.cap_tools = card.cap_tools
        if card.cap_vision is not None:
            info.cap_vision = card.cap_vision
        infos.append(info)
    return infos


class RegistrationRejected(Exception):
    """The dispatcher refused us (bad token, failed challenge): retrying will not help soon."""


class LinkClient:
    def __init__(
        self,
        config: AgentConfig,
        handler: RequestHandler,
        keys: KeyPair | None = None,
        rng: random.Random | None = None,
        on_registered: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._handler = handler
        self._keys = keys or KeyPair.generate()
        self._rng = rng or random.Random()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running: Counter[str] = Counter()
        self._ws: ClientConnection | None = None
        self._stopping = False
        self._on_registered = on_registered

    async def run_forever(self) -> None:
        """Stay connected until `stop()`; cancel-safe."""
        delay = self._config.reconnect_min_s
        while not self._stopping:
            registered = False
            try:
                async with connect(
                    self._config.dispatcher_url,
                    max_size=MAX_FRAME_BYTES,
                    ping_interval=None,
                    open_timeout=10,
                ) as ws:
                    self._ws = ws
                    registered = await self._session(ws)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                log.info("link down", extra={"error": f"{type(exc).__name__}: {exc}"})
            except InvalidURI:
                raise
            finally:
                self._ws = None
                self._cancel_all()
            if self._stopping:
                return
            delay = (
                self._config.reconnect_min_s
                if registered
                else min(delay * 2, self._config.reconnect_max_s)
            )
            # Full jitter keeps a restarted dispatcher from a thundering herd of providers.
            await asyncio.sleep(
                self._rng.uniform(
                    self._config.reconnect_min_s, max(delay, self._config.reconnect_min_s)
                )
            )

    async def stop(self) -> None:
        """Clean shutdown: tell the dispatcher first, then close."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(
                    link_pb2.Frame(goodbye=link_pb2.Goodbye(reason="shutdown")).SerializeToString()
                )
                await ws.close()
        self._cancel_all()

    async def _send(self, ws: ClientConnection, frame: link_pb2.Frame) -> None:
        await ws.send(frame.SerializeToString())

    async def _session(self, ws: ClientConnection) -> bool:
        c = self._config
        await self._send(
            ws,
            link_pb2.Frame(
                register=link_pb2.Register(
                    provider_id=c.provider_id,
                    version=c.version,
                    models=model_infos(self._handler.cards, c.max_concurrency),
                    hardware=c.hardware,
                    public_key=self._keys.public_bytes,
                    enrollment_token=c.token,
                    decode_tps=c.decode_tps,
                    prefill_tps=c.prefill_tps,
                )
            ),
        )
        heartbeat: asyncio.Task[None] | None = None
        registered = False
        try:
            async for data in ws:
                if isinstance(data, str):
                    continue
                frame = link_pb2.Frame()
                frame.ParseFromString(data)
                kind = frame.WhichOneof("kind")
                if kind == "challenge":
                    await self._answer(ws, frame.challenge)
                elif kind == "registered":
                    registered = True
                    interval = frame.registered.heartbeat_interval_s or c.heartbeat_interval_s
                    heartbeat = asyncio.create_task(self._heartbeats(ws, interval))
                    log.info(
                        "registered",
                        extra={"provider": c.provider_id, "models": list(self._handler.cards)},
                    )
                    if self._on_registered is not None:
                        self._on_registered()
                elif kind == "request":
                    self._start(ws, frame.request)
                elif kind == "cancel":
                    task = self._tasks.pop(frame.cancel.request_id, None)
                    if task is not None:
                        task.cancel()
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
        if not registered and ws.close_code == 1008:
            log.error("dispatcher rejected registration", extra={"reason": ws.close_reason})
        return registered

    async def _answer(self, ws: ClientConnection, challenge: link_pb2.Challenge) -> None:
        sealed = SealedChannel(self._keys, challenge.dispatcher_public_key).seal(challenge.nonce)
        await self._send(
            ws, link_pb2.Frame(challenge_response=link_pb2.ChallengeResponse(sealed_nonce=sealed))
        )

    async def _heartbeats(self, ws: ClientConnection, interval: float) -> None:
        while True:
            loads = [
                link_pb2.ModelLoad(model=m, running=self._running[m]) for m in self._handler.cards
            ]
            try:
                await self._send(ws, link_pb2.Frame(heartbeat=link_pb2.Heartbeat(loads=loads)))
            except ConnectionClosed:
                return
            await asyncio.sleep(interval)

    def _start(self, ws: ClientConnection, request: link_pb2.Request) -> None:
        task = asyncio.create_task(self._serve(ws, request))
        self._tasks[request.request_id] = task
        rid = request.request_id

        def forget(_task: asyncio.Task[None]) -> None:
            if self._tasks.get(rid) is task:
                del self._tasks[rid]

        task.add_done_callback(forget)

    async def _serve(self, ws: ClientConnection, request: link_pb2.Request) -> None:
        rid = request.request_id
        try:
            channel = SealedChannel(self._keys, request.session_public_key)
            raw = channel.open(request.sealed_body)
        except SealError:
            await self._send_quiet(
                ws,
                link_pb2.Frame(
                    error=link_pb2.Error(
                        request_id=rid,
                        status_code=400,
                        message="request not sealed for this provider",
                    )
                ),
            )
            return
        model = ""
        try:
            prepared = self._handler.prepare(rid, raw, completions=request.completions)
            model = prepared.model
            self._running[model] += 1
            async for out in self._handler.run(prepared):
                if isinstance(out, bytes):
                    frame = link_pb2.Frame(
                        chunk=link_pb2.Chunk(request_id=rid, sealed=channel.seal(out))
                    )
                elif isinstance(out, Accepted):
                    frame = link_pb2.Frame(accepted=link_pb2.Accepted(request_id=rid))
                else:
                    assert isinstance(out, Finished)
                    usage = common_pb2.Usage(
                        prompt_tokens=out.prompt_tokens,
                        completion_tokens=out.completion_tokens,
                        total_tokens=out.prompt_tokens + out.completion_tokens,
                    )
                    frame = link_pb2.Frame(complete=link_pb2.Complete(request_id=rid, usage=usage))
                await self._send(ws, frame)
        except EngineError as exc:
            await self._send_quiet(
                ws,
                link_pb2.Frame(
                    error=link_pb2.Error(
                        request_id=rid, status_code=exc.status, message=exc.message
                    )
                ),
            )
        except DropConnection:
            log.warning("fault injection: dropping the link", extra={"request_id": rid})
            await ws.close(1011, "simulated provider death")
        except ConnectionClosed:
            return
        finally:
            if model:
                self._running[model] -= 1

    async def _send_quiet(self, ws: ClientConnection, frame: link_pb2.Frame) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send(ws, frame)

    def _cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
