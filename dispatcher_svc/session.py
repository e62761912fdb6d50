"""One registered provider's session and the attempts routed through it (rules F2-F4, F8).

Each dispatch attempt gets its own queue of link events; the session's reader
(`link.LinkServer`) routes frames there. Everything a provider says about an attempt is
clamped on the way in (`provider_input`): its error status and message, its token counts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.sealing import KeyPair, SealedChannel, SealError
from dispatcher_svc.config import LinkLimits
from dispatcher_svc.provider_input import (
    ProviderProfile,
    ReportBudget,
    clamp_error,
    clamp_usage,
)

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
    """What the link layer tells the registry (implemented over gRPC in production). It
    only ever receives validated, clamped input (F4)."""

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
            self._queue.put_nowait(LinkComplete(clamp_usage(frame.complete.usage)))
        elif kind == "error":
            status, message = clamp_error(
                frame.error.status_code, frame.error.message, self.session.limits
            )
            self._queue.put_nowait(LinkError(status, message))
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
    """One connected provider that passed the door's checks (F4-F6); `trusted` once it
    proved its key. `token` names the enrollment token it came with (its index, never the
    secret); `reports` is its budget of registry reports (F4)."""

    def __init__(
        self,
        ws: ServerConnection,
        profile: ProviderProfile,
        token: str,
        on_violation: Callable[[ProviderSession, str], None],
        limits: LinkLimits,
        reports: ReportBudget,
        send_timeout_s: float = 30.0,
    ) -> None:
        self.ws = ws
        self.send_timeout_s = send_timeout_s
        self.token = token
        self.limits = limits
        self.reports = reports
        self.provider_id = profile.provider_id
        self.version = profile.version
        self.public_key = profile.public_key
        self.models = list(profile.models)
        self.hardware = profile.hardware
        self.decode_tps = profile.decode_tps
        self.prefill_tps = profile.prefill_tps
        self.trusted = False
        self.closed = False
        self._attempts: dict[str, Attempt] = {}
        self._on_violation = on_violation
        self._pending_challenge: tuple[bytes, asyncio.Future[bytes]] | None = None
        # Set once the session is found untrusted: the task reporting it and closing 1008.
        self.closing: asyncio.Task[None] | None = None

    @property
    def served(self) -> set[str]:
        """The model ids this provider registered (heartbeat loads for others are ignored)."""
        return {m.id for m in self.models}

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

    async def fail_attempt(self, attempt_id: str, status: int, message: str) -> bool:
        """End one live attempt with `LinkError(status, message)` and tell the provider to
        stop it (F8: only that attempt fails; the session and its other attempts go on).
        False when no such attempt is live (a late frame)."""
        attempt = self._attempts.get(attempt_id)
        if attempt is None:
            return False
        attempt._push(LinkError(status, message))
        await self.cancel(attempt_id)
        return True

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

    def fail_all(self, event: LinkEvent) -> None:
        """End every live attempt with `event` and forget them."""
        for attempt in self._attempts.values():
            attempt._push(event)
        self._attempts.clear()

    def mark_closed(self) -> None:
        self.closed = True
        self.fail_all(LinkDisconnected())
        if self._pending_challenge is not None and not self._pending_challenge[1].done():
            self._pending_challenge[1].cancel()

    @property
    def live_attempts(self) -> int:
        """Attempts still routed to this session. No production caller; kept as the F3
        tests' probe that a replaced session holds none."""
        return len(self._attempts)
