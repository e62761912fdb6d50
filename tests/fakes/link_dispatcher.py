"""A small in-test dispatcher: the dispatcher's side of `provider_link.proto` over a real
WebSocket on 127.0.0.1 port 0, recording every frame with its arrival time, so tests can
assert on exactly what a provider agent sends (and when).

It checks what the real dispatcher checks at the door (enrollment token, key-possession
challenge) and otherwise lets the test drive: send requests sealed to the provider's key
(or to any other key), cancel them, send re-challenges or garbage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from contract import provider_link_pb2 as link_pb2
from contract.sealing import KeyPair, SealedChannel

TOKEN = "test-enrollment"


@dataclass
class Received:
    at: float  # time.monotonic() when the frame arrived
    frame: link_pb2.Frame

    @property
    def kind(self) -> str:
        return self.frame.WhichOneof("kind") or ""


@dataclass
class Session:
    """One provider connection that presented a valid token."""

    ws: ServerConnection
    register: link_pb2.Register
    keys: KeyPair  # the dispatcher's key for this session
    challenge_ok: bool = False
    frames: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    log: list[Received] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, frame: link_pb2.Frame) -> None:
        await self.ws.send(frame.SerializeToString())

    async def request(
        self,
        body: Any,
        *,
        completions: bool = False,
        seal_to: bytes | None = None,
        request_id: str | None = None,
    ) -> tuple[str, SealedChannel]:
        """Seal `body` (to the provider's key unless `seal_to`) under a fresh ephemeral key
        and send it; returns the request id and the channel that opens its chunks."""
        ephemeral = KeyPair.generate()
        channel = SealedChannel(ephemeral, seal_to or bytes(self.register.public_key))
        rid = request_id or uuid.uuid4().hex
        await self.send(
            link_pb2.Frame(
                request=link_pb2.Request(
                    request_id=rid,
                    session_public_key=ephemeral.public_bytes,
                    sealed_body=channel.seal(json.dumps(body).encode()),
                    completions=completions,
                )
            )
        )
        return rid, SealedChannel(ephemeral, bytes(self.register.public_key))

    async def cancel(self, request_id: str) -> float:
        """Send Cancel; returns the monotonic time it was written."""
        await self.send(link_pb2.Frame(cancel=link_pb2.Cancel(request_id=request_id)))
        return time.monotonic()

    async def challenge(self) -> bytes:
        """Send a (re-)challenge; returns its nonce."""
        nonce = secrets.token_bytes(32)
        await self.send(
            link_pb2.Frame(
                challenge=link_pb2.Challenge(
                    nonce=nonce, dispatcher_public_key=self.keys.public_bytes
                )
            )
        )
        return nonce

    def opens_to(self, sealed: bytes, nonce: bytes) -> bool:
        try:
            return SealedChannel(self.keys, bytes(self.register.public_key)).open(sealed) == nonce
        except ValueError:
            return False

    async def next(self, kind: str | None = None, within: float = 5.0) -> Received:
        """The next frame (of `kind`, skipping others) within `within` seconds."""
        async with asyncio.timeout(within):
            while True:
                got = await self.frames.get()
                if kind is None or got.kind == kind:
                    return got

    async def for_request(self, request_id: str, within: float = 5.0) -> list[Received]:
        """Frames for `request_id` up to and including its Complete or Error."""
        out: list[Received] = []
        async with asyncio.timeout(within):
            while True:
                got = await self.frames.get()
                if got.kind in ("chunk", "complete", "error", "accepted"):
                    if getattr(got.frame, got.kind).request_id != request_id:
                        continue
                    out.append(got)
                    if got.kind in ("complete", "error"):
                        return out


class FakeDispatcher:
    def __init__(
        self,
        *,
        tokens: tuple[str, ...] = (TOKEN,),
        heartbeat_interval_s: float = 0.05,
        verify_challenge: bool = True,
    ) -> None:
        self.tokens = tokens
        self.heartbeat_interval_s = heartbeat_interval_s
        self.verify_challenge = verify_challenge
        self.attempts: list[float] = []  # monotonic time of every connection
        self.rejected = 0
        self.sessions: asyncio.Queue[Session] = asyncio.Queue()
        self._server: Server | None = None

    async def start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0, ping_interval=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeDispatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    async def session(self, within: float = 5.0) -> Session:
        """The next provider session that got past the token check."""
        async with asyncio.timeout(within):
            return await self.sessions.get()

    async def _handle(self, ws: ServerConnection) -> None:
        self.attempts.append(time.monotonic())
        first = link_pb2.Frame()
        try:
            first.ParseFromString(await ws.recv())
        except ConnectionClosed:
            return
        if first.WhichOneof("kind") != "register":
            await ws.close(1002, "first frame must be register")
            return
        if first.register.enrollment_token not in self.tokens:
            self.rejected += 1
            await ws.close(1008, "invalid enrollment token")
            return
        session = Session(ws, first.register, KeyPair.generate())
        try:
            nonce = await session.challenge()
            answer = link_pb2.Frame()
            answer.ParseFromString(await ws.recv())
            session.challenge_ok = answer.WhichOneof(
                "kind"
            ) == "challenge_response" and session.opens_to(
                answer.challenge_response.sealed_nonce, nonce
            )
            if self.verify_challenge and not session.challenge_ok:
                await ws.close(1008, "challenge failed")
                return
            await session.send(
                link_pb2.Frame(
                    registered=link_pb2.Registered(
                        provider_id=first.register.provider_id,
                        heartbeat_interval_s=self.heartbeat_interval_s,
                    )
                )
            )
            self.sessions.put_nowait(session)
            async for data in ws:
                frame = link_pb2.Frame()
                frame.ParseFromString(data if isinstance(data, bytes) else data.encode())
                got = Received(time.monotonic(), frame)
                session.log.append(got)
                session.frames.put_nowait(got)
        except ConnectionClosed:
            pass
        finally:
            session.closed.set()
            with contextlib.suppress(ConnectionClosed):
                await ws.close()
