"""The provider side of the link: dial, register, prove the key, heartbeat, serve (E1, F1).

Reconnects with jittered exponential backoff (a rejected registration keeps backing off,
so a wrong token never becomes a reconnect loop at full speed); each request runs as its
own task so a `Cancel` frame stops generation at once; per model at most
`max_concurrency` requests generate, the rest wait (both reported in heartbeats); a clean
stop says `Goodbye` before anything else so the dispatcher fails over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections import Counter
from collections.abc import Callable

from google.protobuf.message import DecodeError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.chunks import is_boilerplate
from contract.link import CLOSE_POLICY, CLOSE_PROTOCOL, MAX_CHUNK_BYTES, MAX_FRAME_BYTES
from contract.sealing import KeyPair, SealedChannel, SealError
from provider_agent.advertise import advertised, model_infos
from provider_agent.batching import ready_batches
from provider_agent.config import AgentConfig
from provider_agent.engines.base import (
    Accepted,
    DropConnection,
    EngineError,
    GenerateRequest,
)
from provider_agent.handler import RequestHandler

log = logging.getLogger(__name__)


class FirstContent:
    """True for a request's first content chunk (B1's notion: not boilerplate), the one
    the dispatcher commits on and the client waits for; false for everything else."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, out: object) -> bool:
        if self.seen or not isinstance(out, bytes) or is_boilerplate(out):
            return False
        self.seen = True
        return True


def _chunk_frame(request_id: str, sealed: list[bytes]) -> link_pb2.Frame:
    return link_pb2.Frame(chunk=link_pb2.Chunk(request_id=request_id, sealed=sealed))


class Backoff:
    """Exponential backoff with equal jitter: the n-th consecutive failure waits a random
    time in [c/2, c] where c = min(max_s, min_s * 2**n). Never zero (no reconnect loop at
    full speed) and always jittered (a restarted dispatcher is not hit by every provider in
    the same instant). `reset()` after a session that registered."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random) -> None:
        self._min = max(min_s, 0.001)
        self._max = max(max_s, self._min)
        self._rng = rng
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        ceiling = min(self._max, self._min * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)


class SessionEnd(enum.Enum):
    REGISTERED = "registered"  # served for a while, then the link dropped
    FAILED = "failed"  # never registered: network trouble, dispatcher restarting
    REJECTED = "rejected"  # the dispatcher refused us (bad token, failed challenge)


class _Load:
    """Per-model admission: at most `limit` generate at once, the rest wait (cancel-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.semaphore = asyncio.Semaphore(limit)
        self.running = 0
        self.waiting = 0


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
        self._backoff = Backoff(
            config.reconnect_min_s, config.reconnect_max_s, rng or random.Random()
        )
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cards = advertised(handler.cards)
        self._loads = {model: _Load(config.max_concurrency) for model in self._cards}
        self._ws: ClientConnection | None = None
        self._stopping = asyncio.Event()
        self._on_registered = on_registered
        self.sessions: Counter[SessionEnd] = Counter()  # how sessions ended, for operators

    @property
    def handler(self) -> RequestHandler:
        return self._handler

    @property
    def public_key(self) -> bytes:
        return self._keys.public_bytes

    async def run_forever(self) -> None:
        """Stay connected until `stop()`; cancel-safe."""
        while not self._stopping.is_set():
            end = SessionEnd.FAILED
            try:
                async with connect(
                    self._config.dispatcher_url,
                    max_size=MAX_FRAME_BYTES,
                    ping_interval=None,
                    compression=None,  # sealed payloads do not compress
                    open_timeout=10,
                ) as ws:
                    self._ws = ws
                    if self._stopping.is_set():  # stop() ran while we were dialling
                        return
                    end = await self._session(ws)
            except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError) as exc:
                log.info("link down", extra={"error": f"{type(exc).__name__}: {exc}"})
            except InvalidURI:
                raise
            finally:
                self._ws = None
                self._cancel_all()
            self.sessions[end] += 1
            if self._stopping.is_set():
                return
            if end is SessionEnd.REGISTERED:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            log.info("reconnecting", extra={"after_s": round(delay, 3), "last": end.value})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def stop(self) -> None:
        """Clean shutdown: tell the dispatcher first (so it fails our requests over at
        once), then stop generating and close."""
        self._stopping.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._send(ws, link_pb2.Frame(goodbye=link_pb2.Goodbye(reason="shutdown")))
        self._cancel_all()
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.close()

    async def _send(self, ws: ClientConnection, frame: link_pb2.Frame) -> None:
        await ws.send(frame.SerializeToString())

    async def _session(self, ws: ClientConnection) -> SessionEnd:
        c = self._config
        await self._send(
            ws,
            link_pb2.Frame(
                register=link_pb2.Register(
                    provider_id=c.provider_id,
                    version=c.version,
                    models=model_infos(self._cards, c.max_concurrency),
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
                frame = self._parse(data)
                if frame is None:
                    await ws.close(CLOSE_PROTOCOL, "malformed frame")
                    break
                kind = frame.WhichOneof("kind")
                if kind == "challenge":
                    if not await self._answer(ws, frame.challenge):
                        await ws.close(CLOSE_PROTOCOL, "bad challenge key")
                        break
                elif kind == "registered":
                    registered = True
                    interval = frame.registered.heartbeat_interval_s or c.heartbeat_interval_s
                    if heartbeat is not None:
                        heartbeat.cancel()
                    heartbeat = asyncio.create_task(self._heartbeats(ws, interval))
                    log.info(
                        "registered",
                        extra={"provider": c.provider_id, "models": list(self._cards)},
                    )
                    if self._on_registered is not None:
                        self._on_registered()
                elif kind == "request":
                    self._start(ws, frame.request)
                elif kind == "cancel":
                    task = self._tasks.pop(frame.cancel.request_id, None)
                    if task is not None:
                        task.cancel()
        except ConnectionClosed:
            pass  # how it closed is decided below
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
        if registered:
            return SessionEnd.REGISTERED
        if ws.close_code == CLOSE_POLICY and not self._stopping.is_set():
            log.error(
                "dispatcher rejected registration; backing off",
                extra={"provider": c.provider_id, "reason": ws.close_reason},
            )
            return SessionEnd.REJECTED
        return SessionEnd.FAILED

    @staticmethod
    def _parse(data: str | bytes) -> link_pb2.Frame | None:
        if isinstance(data, str):
            return None
        frame = link_pb2.Frame()
        try:
            frame.ParseFromString(data)
        except DecodeError:
            return None
        return frame

    async def _answer(self, ws: ClientConnection, challenge: link_pb2.Challenge) -> bool:
        try:
            channel = SealedChannel(self._keys, challenge.dispatcher_public_key)
        except SealError:
            log.error("challenge carries a malformed dispatcher key")
            return False
        sealed = channel.seal(challenge.nonce)
        await self._send(
            ws, link_pb2.Frame(challenge_response=link_pb2.ChallengeResponse(sealed_nonce=sealed))
        )
        return True

    async def _heartbeats(self, ws: ClientConnection, interval: float) -> None:
        while True:
            loads = [
                link_pb2.ModelLoad(
                    model=m, running=load.running, waiting=load.waiting, max_concurrency=load.limit
                )
                for m, load in self._loads.items()
            ]
            try:
                await self._send(ws, link_pb2.Frame(heartbeat=link_pb2.Heartbeat(loads=loads)))
            except ConnectionClosed:
                return
            await asyncio.sleep(interval)

    def _start(self, ws: ClientConnection, request: link_pb2.Request) -> None:
        rid = request.request_id
        previous = self._tasks.get(rid)
        if previous is not None:  # a duplicate id replaces, never orphans, the old task
            previous.cancel()
        task = asyncio.create_task(self._serve(ws, request))
        self._tasks[rid] = task

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
            await self._error(ws, rid, 400, "request not sealed for this provider")
            return
        try:
            prepared = self._handler.prepare(rid, raw, completions=request.completions)
            load = self._loads.get(prepared.model)
            if load is None:  # scanned but not advertised (see `advertised`)
                raise EngineError(404, f"model {prepared.model!r} is not served here")
            load.waiting += 1
            try:
                await load.semaphore.acquire()
            finally:
                load.waiting -= 1
            load.running += 1
            try:
                await self._generate(ws, channel, prepared)
            finally:
                load.running -= 1
                load.semaphore.release()
        except EngineError as exc:
            await self._error(ws, rid, exc.status, exc.message)
        except DropConnection:
            log.warning("fault injection: dropping the link", extra={"request_id": rid})
            await ws.close(1011, "simulated provider death")
        except ConnectionClosed:
            return
        except Exception as exc:
            # An engine bug must still end the attempt, or the dispatcher waits out its
            # deadline for a provider that will never answer.
            log.exception("request failed unexpectedly", extra={"request_id": rid})
            await self._error(ws, rid, 500, f"provider error: {type(exc).__name__}: {exc}")

    async def _generate(
        self, ws: ClientConnection, channel: SealedChannel, prepared: GenerateRequest
    ) -> None:
        rid = prepared.request_id
        # aclosing: a Cancel that lands while we await the socket still closes the engine
        # stream (an upstream HTTP response) now, not whenever the generator is collected.
        async with (
            contextlib.aclosing(self._handler.run(prepared)) as outputs,
            contextlib.aclosing(ready_batches(outputs, urgent=FirstContent())) as batches,
        ):
            async for batch in batches:
                # Chunks that were ready together travel in one frame (each stays its own
                # event for the client) as long as they fit the link's chunk cap together
                # (F8); Accepted and Complete keep their place in order.
                sealed: list[bytes] = []
                size = 0
                for out in batch:
                    if isinstance(out, bytes):
                        if sealed and size + len(out) > MAX_CHUNK_BYTES:
                            await self._send(ws, _chunk_frame(rid, sealed))
                            sealed, size = [], 0
                        if len(out) > MAX_CHUNK_BYTES:
                            # The dispatcher would fail the attempt anyway: say why.
                            raise EngineError(
                                502, f"chunk of {len(out)} bytes is over the link's cap"
                            )
                        sealed.append(channel.seal(out))
                        size += len(out)
                        continue
                    if sealed:
                        await self._send(ws, _chunk_frame(rid, sealed))
                        sealed, size = [], 0
                    if isinstance(out, Accepted):
                        await self._send(
                            ws, link_pb2.Frame(accepted=link_pb2.Accepted(request_id=rid))
                        )
                        continue
                    usage = common_pb2.Usage(
                        prompt_tokens=out.prompt_tokens,
                        completion_tokens=out.completion_tokens,
                        total_tokens=out.prompt_tokens + out.completion_tokens,
                    )
                    frame = link_pb2.Frame(complete=link_pb2.Complete(request_id=rid, usage=usage))
                    await self._send(ws, frame)
                    return
                if sealed:
                    await self._send(ws, _chunk_frame(rid, sealed))
        raise EngineError(502, "engine stream ended without finishing")

    async def _error(self, ws: ClientConnection, rid: str, status: int, message: str) -> None:
        frame = link_pb2.Frame(
            error=link_pb2.Error(request_id=rid, status_code=status, message=message)
        )
        with contextlib.suppress(ConnectionClosed):
            await self._send(ws, frame)

    def _cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
