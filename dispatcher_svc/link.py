"""Provider link: WebSocket sessions speaking protobuf frames (rules E1, F1-F3).

A provider dials in, sends `Register` with its enrollment token and X25519 key, proves it
holds the secret key (`Challenge` -> `ChallengeResponse`), and only then becomes routable.
Each dispatch attempt gets its own queue of link events; the session's reader routes
frames there. Malformed frames close that one session, never the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import DecodeError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.link import CLOSE_POLICY, CLOSE_PROTOCOL
from contract.sealing import KeyPair, SealedChannel, SealError
from dispatcher_svc.config import DispatcherConfig

log = logging.getLogger(__name__)


# --- what an attempt sees -------------------------------------------------------------


@dataclass(frozen=True)
class LinkAccepted:
    """The provider is loading the model cold (B6)."""


@dataclass(frozen=True)
class LinkChunk:
    payload: bytes  # opened plaintext: one OpenAI chunk JSON object


@dataclass(frozen=True)
class LinkComplete:
    usage: common_pb2.Usage


@dataclass(frozen=True)
class LinkError:
    status: int
    message: str


@dataclass(frozen=True)
class LinkDisconnected:
    """The session closed while the attempt was live (= 502)."""


LinkEvent = LinkAccepted | LinkChunk | LinkComplete | LinkError | LinkDisconnected


class RegistryPort(Protocol):
    """What the link layer tells the registry (implemented over gRPC in production)."""

    async def upsert(self, session: ProviderSession) -> None: ...
    async def remove(self, provider_id: str) -> None: ...
    async def report_load(
        self, provider_id: str, loads: list[link_pb2.ModelLoad], trusted: bool
    ) -> None: ...


class LinkClosedError(ConnectionError):
    """The provider session is gone."""


class Attempt:
    """One request sent to one provider. Iterate `events()` until a terminal event."""

    def __init__(self, session: ProviderSession, attempt_id: str, channel: SealedChannel) -> None:
        self.session = session
        self.attempt_id = attempt_id
        self._channel = channel
        self._queue: asyncio.Queue[LinkEvent] = asyncio.Queue()

    def _push_frame(self, frame: link_pb2.Frame) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "chunk":
            try:
                payloads = [self._channel.open(sealed) for sealed in frame.chunk.sealed]
            except SealError:
                self.session.violation(f"chunk for {self.attempt_id} not sealed for this session")
                return
            for payload in payloads:
                self._queue.put_nowait(LinkChunk(payload))
        elif kind == "complete":
            self._queue.put_nowait(LinkComplete(frame.complete.usage))
        elif kind == "error":
            self._queue.put_nowait(LinkError(frame.error.status_code or 500, frame.error.message))
        elif kind == "accepted":
            self._queue.put_nowait(LinkAccepted())

    def _push(self, event: LinkEvent) -> None:
        self._queue.put_nowait(event)

    async def next_event(self) -> LinkEvent:
        return await self._queue.get()

    def ready_events(self) -> list[LinkEvent]:
        """Every event already queued, without waiting. No production caller (the driver
        reads `next_event`); kept as the F3 tests' probe that late frames queue nothing."""
        out: list[LinkEvent] = []
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out

    async def events(self) -> AsyncIterator[LinkEvent]:
        while True:
            event = await self._queue.get()
            yield event
            if not isinstance(event, LinkAccepted | LinkChunk):
                return

    async def cancel(self) -> None:
        """Tell the provider to stop; safe to call on a closed session or twice."""
        await self.session.cancel(self.attempt_id)


class ProviderSession:
    """One connected, registered provider."""

    def __init__(
        self,
        ws: ServerConnection,
        register: link_pb2.Register,
        on_violation: Callable[[ProviderSession, str], None],
        send_timeout_s: float = 30.0,
    ) -> None:
        self.ws = ws
        self.send_timeout_s = send_timeout_s
        self.provider_id = register.provider_id
        self.version = register.version
        self.public_key = bytes(register.public_key)
        self.models = list(register.models)
        self.hardware = register.hardware
        self.decode_tps = register.decode_tps
        self.prefill_tps = register.prefill_tps
        self.trusted = False
        self.closed = False
        self._attempts: dict[str, Attempt] = {}
        self._on_violation = on_violation
        self._pending_challenge: tuple[bytes, asyncio.Future[bytes]] | None = None
        # Set once the session is found untrusted: the task reporting it and closing 1008.
        self.closing: asyncio.Task[None] | None = None

    async def send(self, frame: link_pb2.Frame) -> None:
        """Write one frame. A provider that stops reading (its socket buffer stays full past
        `send_timeout_s`) is closed rather than allowed to block the dispatcher."""
        if self.closed:
            raise LinkClosedError(self.provider_id)
        try:
            async with asyncio.timeout(self.send_timeout_s):
                await self.ws.send(frame.SerializeToString())
        except ConnectionClosed as exc:
            raise LinkClosedError(self.provider_id) from exc
        except TimeoutError as exc:
            self.mark_closed()
            self.ws.transport.abort()
            raise LinkClosedError(self.provider_id) from exc

    async def start_attempt(self, attempt_id: str, body: bytes, *, completions: bool) -> Attempt:
        """Seal `body` to the provider under a fresh ephemeral key and send it."""
        ephemeral = KeyPair.generate()
        channel = SealedChannel(ephemeral, self.public_key)
        attempt = Attempt(self, attempt_id, channel)
        self._attempts[attempt_id] = attempt
        frame = link_pb2.Frame(
            request=link_pb2.Request(
                request_id=attempt_id,
                session_public_key=ephemeral.public_bytes,
                sealed_body=channel.seal(body),
                completions=completions,
            )
        )
        try:
            await self.send(frame)
        except LinkClosedError:
            attempt._push(LinkDisconnected())
        return attempt

    async def cancel(self, attempt_id: str) -> None:
        if self._attempts.pop(attempt_id, None) is None or self.closed:
            return
        with contextlib.suppress(LinkClosedError):
            await self.send(link_pb2.Frame(cancel=link_pb2.Cancel(request_id=attempt_id)))

    def finish(self, attempt_id: str) -> None:
        """Forget a finished attempt (no Cancel frame)."""
        self._attempts.pop(attempt_id, None)

    def route(self, frame: link_pb2.Frame) -> None:
        kind = frame.WhichOneof("kind")
        request_id = getattr(frame, kind).request_id if kind else ""
        attempt = self._attempts.get(request_id)
        if attempt is None:
            return  # late frame for a cancelled or finished attempt
        attempt._push_frame(frame)
        if kind in ("complete", "error"):
            self._attempts.pop(request_id, None)

    def violation(self, reason: str) -> None:
        self._on_violation(self, reason)

    def mark_closed(self) -> None:
        self.closed = True
        for attempt in self._attempts.values():
            attempt._push(LinkDisconnected())
        self._attempts.clear()
        if self._pending_challenge is not None and not self._pending_challenge[1].done():
            self._pending_challenge[1].cancel()

    @property
    def live_attempts(self) -> int:
        """Attempts still routed to this session. No production caller; kept as the F3
        tests' probe that a replaced session holds none."""
        return len(self._attempts)


class LinkServer:
    """Accepts provider WebSockets and keeps the table of live sessions."""

    def __init__(self, config: DispatcherConfig, registry: RegistryPort) -> None:
        self._config = config
        self._registry = registry
        self._keys = KeyPair.generate()
        self.sessions: dict[str, ProviderSession] = {}
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await serve(
            self._handle,
            self._config.link_host,
            self._config.link_port,
            max_size=self._config.max_frame_bytes,
            ping_interval=None,  # liveness is our own heartbeat
            compression=None,  # payloads are sealed: deflate only burns CPU
        )
        return int(next(iter(self._server.sockets)).getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def get(self, provider_id: str) -> ProviderSession | None:
        session = self.sessions.get(provider_id)
        return session if session is not None and not session.closed else None

    # --- one connection -----------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session: ProviderSession | None = None
        try:
            session = await self._handshake(ws)
            if session is None:
                return
            await self._serve(session)
        except (ConnectionClosed, LinkClosedError):
            pass  # the provider went away (LinkClosedError: while we were sending to it)
        finally:
            if session is not None:
                try:
                    if session.closing is not None:
                        # An untrusted session must be told 1008 before the server's own
                        # close of a finished handler (1000) could go out first.
                        await session.closing
                finally:
                    await self._drop(session)

    async def _recv_frame(self, ws: ServerConnection, wait_s: float) -> link_pb2.Frame | None:
        """Next frame, or None after closing the socket on a malformed one."""
        async with asyncio.timeout(wait_s):
            data = await ws.recv()
        if isinstance(data, str):
            await ws.close(CLOSE_PROTOCOL, "text frames are not part of the protocol")
            return None
        frame = link_pb2.Frame()
        try:
            frame.ParseFromString(data)
        except DecodeError:
            await ws.close(CLOSE_PROTOCOL, "malformed frame")
            return None
        if frame.WhichOneof("kind") is None:
            await ws.close(CLOSE_PROTOCOL, "empty frame")
            return None
        return frame

    async def _handshake(self, ws: ServerConnection) -> ProviderSession | None:
        timeout = self._config.challenge_timeout_s
        try:
            first = await self._recv_frame(ws, timeout)
        except TimeoutError:
            await ws.close(CLOSE_POLICY, "no register frame")
            return None
        if first is None:
            return None
        if first.WhichOneof("kind") != "register":
            await ws.close(CLOSE_PROTOCOL, "first frame must be register")
            return None
        reg = first.register
        if reg.enrollment_token not in self._config.enrollment_tokens:
            log.warning(
                "rejected provider: bad enrollment token", extra={"provider": reg.provider_id}
            )
            await ws.close(CLOSE_POLICY, "invalid enrollment token")
            return None
        if not reg.provider_id or len(reg.public_key) != 32:
            await ws.close(CLOSE_PROTOCOL, "register needs provider_id and a 32-byte public key")
            return None
        session = ProviderSession(
            ws, reg, self._on_violation, send_timeout_s=self._config.challenge_timeout_s
        )
        nonce = secrets.token_bytes(32)
        await session.send(
            link_pb2.Frame(
                challenge=link_pb2.Challenge(
                    nonce=nonce, dispatcher_public_key=self._keys.public_bytes
                )
            )
        )
        try:
            answer = await self._recv_frame(ws, timeout)
        except TimeoutError:
            await ws.close(CLOSE_POLICY, "challenge not answered")
            return None
        if answer is None:
            return None
        if answer.WhichOneof("kind") != "challenge_response" or not self._verify(
            session, nonce, answer.challenge_response.sealed_nonce
        ):
            log.warning("rejected provider: failed challenge", extra={"provider": reg.provider_id})
            await ws.close(CLOSE_POLICY, "challenge failed")
            return None
        session.trusted = True
        # The new session takes the id first, so the old one's end removes nothing from the
        # registry; the old socket is closed in the background, since a dead peer (the usual
        # reason to re-register) would hold its close handshake for the full close timeout.
        previous = self.sessions.get(session.provider_id)
        self.sessions[session.provider_id] = session
        if previous is not None:
            previous.mark_closed()
            self._background(self._close_replaced(previous))
        try:
            await self._registry.upsert(session)
            await session.send(
                link_pb2.Frame(
                    registered=link_pb2.Registered(
                        provider_id=session.provider_id,
                        heartbeat_interval_s=self._config.heartbeat_interval_s,
                    )
                )
            )
        except LinkClosedError:
            # Gone before it heard Registered: undo the registration at once.
            await self._drop(session)
            return None
        log.info(
            "provider registered",
            extra={
                "provider": session.provider_id,
                "version": session.version,
                "models": [m.id for m in session.models],
            },
        )
        return session

    def _verify(self, session: ProviderSession, nonce: bytes, sealed: bytes) -> bool:
        try:
            return SealedChannel(self._keys, session.public_key).open(sealed) == nonce
        except SealError:
            return False

    async def _serve(self, session: ProviderSession) -> None:
        rechallenge = asyncio.create_task(self._rechallenge_loop(session))
        try:
            while not session.closed:
                try:
                    frame = await self._recv_frame(session.ws, self._config.offline_after_s)
                except TimeoutError:
                    log.warning("provider silent, closing", extra={"provider": session.provider_id})
                    await session.ws.close(CLOSE_POLICY, "heartbeat timeout")
                    return
                if frame is None:
                    return
                await self._on_frame(session, frame)
        finally:
            rechallenge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rechallenge

    async def _on_frame(self, session: ProviderSession, frame: link_pb2.Frame) -> None:
        kind = frame.WhichOneof("kind")
        if kind in ("chunk", "complete", "error", "accepted"):
            session.route(frame)
        elif kind == "heartbeat":
            await self._registry.report_load(
                session.provider_id, list(frame.heartbeat.loads), session.trusted
            )
        elif kind == "models_update":
            session.models = list(frame.models_update.models)
            await self._registry.upsert(session)
        elif kind == "challenge_response":
            pending = session._pending_challenge
            if pending is not None and not pending[1].done():
                pending[1].set_result(bytes(frame.challenge_response.sealed_nonce))
        elif kind == "goodbye":
            log.info("provider said goodbye", extra={"provider": session.provider_id})
            await session.ws.close()
            session.mark_closed()
        else:
            await session.ws.close(CLOSE_PROTOCOL, f"unexpected frame {kind}")
            session.mark_closed()

    async def _rechallenge_loop(self, session: ProviderSession) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._config.challenge_interval_s)
            nonce = secrets.token_bytes(32)
            future: asyncio.Future[bytes] = loop.create_future()
            session._pending_challenge = (nonce, future)
            try:
                await session.send(
                    link_pb2.Frame(
                        challenge=link_pb2.Challenge(
                            nonce=nonce, dispatcher_public_key=self._keys.public_bytes
                        )
                    )
                )
                async with asyncio.timeout(self._config.challenge_timeout_s):
                    sealed = await future
            except (TimeoutError, LinkClosedError):
                sealed = b""
            if not self._verify(session, nonce, sealed):
                self._on_violation(session, "failed a periodic challenge")
                return

    def _on_violation(self, session: ProviderSession, reason: str) -> None:
        """F1/F2: a provider that breaks the sealing contract becomes untrusted and is dropped."""
        if session.closed:
            return
        log.warning("provider untrusted", extra={"provider": session.provider_id, "reason": reason})
        session.trusted = False
        for attempt in list(session._attempts.values()):
            attempt._push(LinkError(502, f"provider protocol violation: {reason}"))
        session._attempts.clear()
        session.closed = True
        session.closing = self._background(self._close_untrusted(session))

    def _background(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _close_untrusted(self, session: ProviderSession) -> None:
        await self._registry.report_load(session.provider_id, [], False)
        with contextlib.suppress(ConnectionClosed):
            await session.ws.close(CLOSE_POLICY, "untrusted")

    @staticmethod
    async def _close_replaced(previous: ProviderSession) -> None:
        with contextlib.suppress(ConnectionClosed):
            await previous.ws.close(CLOSE_POLICY, "replaced by a new session")

    async def _drop(self, session: ProviderSession) -> None:
        session.mark_closed()
        if self.sessions.get(session.provider_id) is session:
            del self.sessions[session.provider_id]
            await self._registry.remove(session.provider_id)
            log.info("provider offline", extra={"provider": session.provider_id})
