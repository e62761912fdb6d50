"""Provider link: WebSocket sessions speaking protobuf frames (rules E1, F1-F8).

A provider dials in and passes the door (`handshake`: register, validation, identity,
token caps, key-possession challenge); `LinkServer` then commits it to the session table,
raises its frame limit from the pre-auth one, and reads its frames: attempt frames go to
their attempt (`session`), heartbeats and model updates to the registry once validated
(`provider_input`). Malformed frames close that one session, never the dispatcher.

The session types are re-exported here: the rest of the dispatcher imports them from
`dispatcher_svc.link`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterator

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from contract import provider_link_pb2 as link_pb2
from contract.link import CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_TRY_AGAIN, close_reason
from contract.sealing import KeyPair
from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.handshake import Door, FrameError, HandshakeGate, address_key, recv_frame
from dispatcher_svc.identity import IdentityBook, LiveLink, token_refusal
from dispatcher_svc.provider_input import (
    BAD_GATEWAY,
    InputRefused,
    check_models,
    chunk_refusal,
    clamp_loads,
)
from dispatcher_svc.session import (
    Attempt,
    LinkAccepted,
    LinkChunk,
    LinkClosedError,
    LinkComplete,
    LinkDisconnected,
    LinkError,
    LinkEvent,
    ProviderSession,
    RegistryPort,
)

__all__ = [
    "Attempt",
    "LinkAccepted",
    "LinkChunk",
    "LinkClosedError",
    "LinkComplete",
    "LinkDisconnected",
    "LinkError",
    "LinkEvent",
    "LinkServer",
    "ProviderSession",
    "RegistryPort",
]

log = logging.getLogger(__name__)


class LinkServer:
    """Accepts provider WebSockets and keeps the table of live sessions. `clock` (seconds,
    monotonic) times identity bindings and report budgets."""

    def __init__(
        self,
        config: DispatcherConfig,
        registry: RegistryPort,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._limits = config.limits
        self._registry = registry
        self._clock = clock
        self._keys = KeyPair.generate()
        self.sessions: dict[str, ProviderSession] = {}
        self._book = IdentityBook(self._limits.id_binding_ttl_s, self._limits.max_ids_per_token)
        self._gate = HandshakeGate(
            self._limits.max_pending_handshakes, self._limits.max_pending_handshakes_per_addr
        )
        self._door = Door(
            config, self._keys, self._book, self._live_links, clock, self._on_violation
        )
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await serve(
            self._handle,
            self._config.link_host,
            self._config.link_port,
            # F7: until a provider has proved its key, a frame is at most a Register's size;
            # `_commit` raises it to `max_frame_bytes`.
            max_size=self._limits.max_register_bytes,
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

    @property
    def pending_handshakes(self) -> int:
        return self._gate.pending

    def _live_links(self) -> Iterator[LiveLink]:
        for session in self.sessions.values():
            if not session.closed:
                yield LiveLink(session.token, session.provider_id, len(session.models))

    # --- one connection -----------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session: ProviderSession | None = None
        try:
            session = await self._enter(ws)
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

    async def _enter(self, ws: ServerConnection) -> ProviderSession | None:
        """Through the door and into the table, or None once the connection is refused."""
        addr = address_key(ws.remote_address)
        if not self._gate.enter(addr):
            log.warning("handshake refused: too many in progress", extra={"addr": addr})
            await ws.close(CLOSE_TRY_AGAIN, "too many registrations in progress")
            return None
        try:
            admitted = await self._door.admit(ws)
            if isinstance(admitted, ProviderSession):
                # No await between the recheck and the commit (see `_commit`).
                refused = self._door.recheck(admitted)
                admitted = self._commit(admitted) if refused is None else refused
            if not isinstance(admitted, ProviderSession):
                await ws.close(admitted.code, close_reason(admitted.reason))
                return None
            session = admitted
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
            except BaseException:
                # Cancelled (the server stops) after the commit: the id must not stay taken.
                self._background(self._drop(session))
                raise
        finally:
            self._gate.leave(addr)
        log.info(
            "provider registered",
            extra={
                "provider": session.provider_id,
                "version": session.version,
                "token": session.token,
                "models": [m.id for m in session.models],
            },
        )
        return session

    def _commit(self, session: ProviderSession) -> ProviderSession:
        """Bind the id to the key (F5), take the id in the table, raise the frame limit.
        Synchronous: nothing may change the table between `recheck` and this."""
        session.trusted = True
        self._book.bind(session.provider_id, session.public_key, session.token, self._clock())
        # The new session takes the id first, so the old one's end removes nothing from the
        # registry; the old socket (the same key's: a reconnect) is closed in the
        # background, since a dead peer (the usual reason to re-register) would hold its
        # close handshake for the full close timeout.
        previous = self.sessions.get(session.provider_id)
        self.sessions[session.provider_id] = session
        if previous is not None:
            previous.mark_closed()
            self._background(self._close_replaced(previous))
        # The frame being parsed already (the next after the challenge answer) keeps the
        # pre-auth limit; an honest agent's is a small heartbeat.
        session.ws.protocol.max_message_size = self._config.max_frame_bytes
        return session

    async def _serve(self, session: ProviderSession) -> None:
        rechallenge = asyncio.create_task(self._rechallenge_loop(session))
        try:
            while not session.closed:
                try:
                    frame = await recv_frame(session.ws, self._config.offline_after_s)
                except TimeoutError:
                    log.warning("provider silent, closing", extra={"provider": session.provider_id})
                    await session.ws.close(CLOSE_POLICY, "heartbeat timeout")
                    return
                except FrameError as exc:
                    await session.ws.close(CLOSE_PROTOCOL, exc.reason)
                    return
                try:
                    await self._on_frame(session, frame)
                except InputRefused as exc:
                    log.warning(
                        "provider frame refused",
                        extra={"provider": session.provider_id, "reason": exc.reason},
                    )
                    await self._close(session, CLOSE_PROTOCOL, exc.reason)
        finally:
            rechallenge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rechallenge

    async def _on_frame(self, session: ProviderSession, frame: link_pb2.Frame) -> None:
        kind = frame.WhichOneof("kind")
        if kind == "chunk":
            refused = chunk_refusal(frame.chunk.sealed, self._limits.max_chunk_bytes)
            if refused is None:
                session.route(frame)
            elif await session.fail_attempt(frame.chunk.request_id, BAD_GATEWAY, refused):
                log.warning(
                    "attempt failed: oversized chunk",
                    extra={"provider": session.provider_id, "reason": refused},
                )
        elif kind in ("complete", "error", "accepted"):
            session.route(frame)
        elif kind == "heartbeat":
            loads = clamp_loads(frame.heartbeat.loads, session.served, self._limits)
            if session.reports.allow(self._clock()):
                await self._registry.report_load(session.provider_id, loads, session.trusted)
        elif kind == "models_update":
            await self._update_models(session, frame.models_update)
        elif kind == "challenge_response":
            pending = session._pending_challenge
            if pending is not None and not pending[1].done():
                pending[1].set_result(bytes(frame.challenge_response.sealed_nonce))
        elif kind == "goodbye":
            log.info("provider said goodbye", extra={"provider": session.provider_id})
            await session.ws.close()
            session.mark_closed()
        else:
            await self._close(session, CLOSE_PROTOCOL, f"unexpected frame {kind}")

    async def _update_models(self, session: ProviderSession, update: link_pb2.ModelsUpdate) -> None:
        """F4/F6: a new model list, validated like a Register's and within the token's model
        cap; the same list again changes nothing (and costs the registry nothing)."""
        models = check_models(update.models, self._limits)
        if models == session.models:
            return
        refused = token_refusal(
            self._live_links(),
            token=session.token,
            provider_id=session.provider_id,
            models=len(models),
            max_links=self._limits.max_links_per_token,
            max_models=self._limits.max_models_per_token,
        )
        if refused is not None:
            await self._close(session, CLOSE_POLICY, refused)
            return
        if not session.reports.allow(self._clock()):
            await self._close(session, CLOSE_POLICY, "models updated too often")
            return
        session.models = models
        await self._registry.upsert(session)

    async def _close(self, session: ProviderSession, code: int, reason: str) -> None:
        await session.ws.close(code, close_reason(reason))
        session.mark_closed()

    async def _rechallenge_loop(self, session: ProviderSession) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._config.challenge_interval_s)
            nonce = secrets.token_bytes(32)
            future: asyncio.Future[bytes] = loop.create_future()
            session._pending_challenge = (nonce, future)
            try:
                await session.send(self._door.challenge(nonce))
                async with asyncio.timeout(self._config.challenge_timeout_s):
                    sealed = await future
            except (TimeoutError, LinkClosedError):
                sealed = b""
            if not self._door.verify(session, nonce, sealed):
                self._on_violation(session, "failed a periodic challenge")
                return

    def _on_violation(self, session: ProviderSession, reason: str) -> None:
        """F1/F2: a provider that breaks the sealing contract becomes untrusted and is dropped."""
        if session.closed:
            return
        log.warning("provider untrusted", extra={"provider": session.provider_id, "reason": reason})
        session.trusted = False
        session.fail_all(LinkError(BAD_GATEWAY, f"provider protocol violation: {reason}"))
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
            # F5: the id stays bound to this key for the binding ttl from now.
            self._book.release(session.provider_id, self._clock())
            await self._registry.remove(session.provider_id)
            log.info("provider offline", extra={"provider": session.provider_id})
