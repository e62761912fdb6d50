"""The link's front door: from a fresh WebSocket to a provider that may register (F1, F4-F7).

In order, on one connection: a `Register` frame (at most `max_register_bytes`: the
server's frame limit until the challenge is passed) with a valid enrollment token; every
field within its format (F4); an id not bound to another key (F5); room under the token's
caps (F6); then the key-possession challenge (F1). The whole handshake has
`handshake_timeout_s`, and at most `max_pending_handshakes` connections (of them
`max_pending_handshakes_per_addr` from one address) may be in it at once (F7).

The door refuses with a `Refusal` (close code and reason) and never touches the session
table: the identity and cap checks are run again by the caller, with no await between
them and the commit (`LinkServer`), since the table may change during the challenge.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import NamedTuple

from google.protobuf.message import DecodeError
from websockets.asyncio.server import ServerConnection

from contract import provider_link_pb2 as link_pb2
from contract.link import CLOSE_POLICY, CLOSE_PROTOCOL
from contract.sealing import KeyPair, SealedChannel, SealError
from dispatcher_svc.config import DispatcherConfig
from dispatcher_svc.identity import IdentityBook, LiveLink, token_refusal
from dispatcher_svc.provider_input import InputRefused, check_register, report_budget
from dispatcher_svc.session import ProviderSession

log = logging.getLogger(__name__)

# Connections from one IPv6 /64 count as one address: a host usually holds the whole prefix.
IPV6_HOST_PREFIX = 64


class Refusal(NamedTuple):
    code: int
    reason: str


class FrameError(Exception):
    """A frame that is not part of the protocol (text, undecodable, empty)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def recv_frame(ws: ServerConnection, wait_s: float) -> link_pb2.Frame:
    """The next frame within `wait_s` (TimeoutError), or `FrameError` for a malformed one."""
    async with asyncio.timeout(wait_s):
        data = await ws.recv()
    if isinstance(data, str):
        raise FrameError("text frames are not part of the protocol")
    frame = link_pb2.Frame()
    try:
        frame.ParseFromString(data)
    except DecodeError:
        raise FrameError("malformed frame") from None
    if frame.WhichOneof("kind") is None:
        raise FrameError("empty frame")
    return frame


def address_key(remote: object) -> str:
    """The key a connection's remote address counts under (F7): the IPv4 address, or the
    IPv6 /64 it is in; "" when unknown."""
    if not isinstance(remote, tuple) or not remote:
        return ""
    try:
        address = ipaddress.ip_address(str(remote[0]))
    except ValueError:
        return str(remote[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_HOST_PREFIX}", strict=False))
    return str(address)


class HandshakeGate:
    """Counts connections in the handshake (F7): `enter` is refused past `max_total` in all
    or `max_per_addr` from one address; every successful `enter` is paired with `leave`."""

    def __init__(self, max_total: int, max_per_addr: int) -> None:
        self._max_total = max_total
        self._max_per_addr = max_per_addr
        self._total = 0
        self._per_addr: dict[str, int] = {}

    @property
    def pending(self) -> int:
        return self._total

    def enter(self, addr: str) -> bool:
        held = self._per_addr.get(addr, 0)
        if self._total >= self._max_total or held >= self._max_per_addr:
            return False
        self._total += 1
        self._per_addr[addr] = held + 1
        return True

    def leave(self, addr: str) -> None:
        self._total -= 1
        held = self._per_addr[addr] - 1
        if held:
            self._per_addr[addr] = held
        else:
            del self._per_addr[addr]


class Door:
    """Admits or refuses one connection at a time (see the module docstring)."""

    def __init__(
        self,
        config: DispatcherConfig,
        keys: KeyPair,
        book: IdentityBook,
        live: Callable[[], Iterable[LiveLink]],
        clock: Callable[[], float],
        on_violation: Callable[[ProviderSession, str], None],
    ) -> None:
        self._config = config
        self._limits = config.limits
        self._keys = keys
        self._book = book
        self._live = live
        self._clock = clock
        self._on_violation = on_violation
        self._tokens = tuple(token.encode() for token in config.enrollment_tokens)

    async def admit(self, ws: ServerConnection) -> ProviderSession | Refusal:
        """A session whose provider passed the challenge (not yet committed), or why not."""
        try:
            async with asyncio.timeout(self._limits.handshake_timeout_s):
                return await self._admit(ws)
        except TimeoutError:
            return Refusal(CLOSE_POLICY, "registration not completed in time")

    def recheck(self, session: ProviderSession) -> Refusal | None:
        """F5 and F6 against the table as it is now (call with no await before the commit)."""
        if self._book.bound_elsewhere(session.provider_id, session.public_key, self._clock()):
            log.warning(
                "rejected provider: id bound to another key",
                extra={"provider": session.provider_id},
            )
            return Refusal(CLOSE_POLICY, "provider id bound to another key")
        refused = token_refusal(
            self._live(),
            token=session.token,
            provider_id=session.provider_id,
            models=len(session.models),
            max_links=self._limits.max_links_per_token,
            max_models=self._limits.max_models_per_token,
        )
        if refused is not None:
            log.warning(
                "rejected provider: token cap",
                extra={"provider": session.provider_id, "token": session.token, "reason": refused},
            )
            return Refusal(CLOSE_POLICY, refused)
        return None

    def verify(self, session: ProviderSession, nonce: bytes, sealed: bytes) -> bool:
        """Whether `sealed` is `nonce` sealed by the session's key to ours (F1)."""
        try:
            return SealedChannel(self._keys, session.public_key).open(sealed) == nonce
        except SealError:
            return False

    def challenge(self, nonce: bytes) -> link_pb2.Frame:
        return link_pb2.Frame(
            challenge=link_pb2.Challenge(nonce=nonce, dispatcher_public_key=self._keys.public_bytes)
        )

    def _token(self, presented: str) -> str | None:
        """The label (index) of the enrollment token presented, or None. Compared in constant
        time, every configured token, so timing tells nothing about any of them."""
        data = presented.encode()
        found: str | None = None
        for n, token in enumerate(self._tokens):
            if hmac.compare_digest(token, data):
                found = f"#{n}"
        return found

    async def _admit(self, ws: ServerConnection) -> ProviderSession | Refusal:
        timeout = self._config.challenge_timeout_s
        try:
            first = await recv_frame(ws, timeout)
        except TimeoutError:
            return Refusal(CLOSE_POLICY, "no register frame")
        except FrameError as exc:
            return Refusal(CLOSE_PROTOCOL, exc.reason)
        if first.WhichOneof("kind") != "register":
            return Refusal(CLOSE_PROTOCOL, "first frame must be register")
        reg = first.register
        # Logged before it is validated: cut to its cap (the JSON log escapes the rest).
        claimed = reg.provider_id[: self._limits.max_provider_id_chars]
        token = self._token(reg.enrollment_token)
        if token is None:
            log.warning("rejected provider: bad enrollment token", extra={"provider": claimed})
            return Refusal(CLOSE_POLICY, "invalid enrollment token")
        try:
            profile = check_register(reg, self._limits)
        except InputRefused as exc:
            log.warning(
                "rejected provider: bad register", extra={"provider": claimed, "reason": exc.reason}
            )
            return Refusal(CLOSE_PROTOCOL, f"register refused: {exc.reason}")
        session = ProviderSession(
            ws,
            profile,
            token,
            self._on_violation,
            self._limits,
            report_budget(self._config.heartbeat_interval_s, self._clock()),
            send_timeout_s=timeout,
        )
        # Checked before the challenge too, so a refused provider costs no key exchange.
        refused = self.recheck(session)
        if refused is not None:
            return refused
        nonce = secrets.token_bytes(32)
        await session.send(self.challenge(nonce))
        try:
            answer = await recv_frame(ws, timeout)
        except TimeoutError:
            return Refusal(CLOSE_POLICY, "challenge not answered")
        except FrameError as exc:
            return Refusal(CLOSE_PROTOCOL, exc.reason)
        if answer.WhichOneof("kind") != "challenge_response" or not self.verify(
            session, nonce, answer.challenge_response.sealed_nonce
        ):
            log.warning("rejected provider: failed challenge", extra={"provider": claimed})
            return Refusal(CLOSE_POLICY, "challenge failed")
        return session
