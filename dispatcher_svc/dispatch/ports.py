"""The ports of the dispatch driver: what it needs from the registry, the provider links
and the clock, as `typing.Protocol`s so tests can fake each one. Production passes
`registry_client.GrpcRegistry`, `link.LinkServer` and `time.monotonic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from contract import hedgerow_common_pb2 as common_pb2
from dispatcher_svc.link import LinkEvent
from dispatcher_svc.registry_client import Reservation, Speed

__all__ = ["Clock", "LinkAttempt", "LinkSession", "Links", "SlotRegistry"]


class Clock(Protocol):
    """Monotonic seconds: both the machine's `now` and the base of its timers."""

    def __call__(self) -> float: ...


class SlotRegistry(Protocol):
    """The registry's slots (in production `registry_client.GrpcRegistry`)."""

    async def reserve(
        self,
        *,
        model: str,
        traits: common_pb2.Traits,
        exclude: Sequence[str],
        avoid_version: str,
        allowlist: Sequence[str],
        prompt_tokens: int,
        max_tokens: int,
        may_queue: bool,
        timeout_s: float,
        reservation_id: str,
    ) -> Reservation:
        """Select a provider and take a slot named `reservation_id`, waiting up to
        `timeout_s`; a refusal raises `NoReservation`."""
        ...

    async def release(
        self, reservation_id: str, status_code: int, speed: Speed | None = None
    ) -> bool:
        """Free the slot, feed the breaker and the measured speed (C5); whether a cooldown
        was entered. Repeatable."""
        ...


class LinkAttempt(Protocol):
    """One request sent to one provider (in production `link.Attempt`)."""

    async def next_event(self) -> LinkEvent: ...

    async def cancel(self) -> None:
        """Tell the provider to stop; safe on a closed session and twice."""
        ...


class LinkSession(Protocol):
    """One connected provider (in production `link.ProviderSession`)."""

    async def start_attempt(
        self, attempt_id: str, body: bytes, *, completions: bool
    ) -> LinkAttempt:
        """Seal `body` to the provider and send it; a failed write is the attempt's
        `LinkDisconnected`. The session knows `attempt_id` before the write starts."""
        ...

    async def cancel(self, attempt_id: str) -> None: ...

    def finish(self, attempt_id: str) -> None:
        """Forget an attempt that ended by itself (no Cancel frame)."""
        ...


class Links(Protocol):
    """The live provider sessions (in production `link.LinkServer`)."""

    def get(self, provider_id: str) -> LinkSession | None: ...
