"""The dispatcher's view of the registry, over gRPC: Reserve and Release multiplexed over one
`Slots` stream (`svckit.rpcmux.UnaryMux`), the provider table's calls unary."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract import registry_pb2, registry_pb2_grpc
from contract.errors import ErrorCode, Failure
from contract.slots import RELEASE_CANCELLED
from dispatcher_svc.link import ProviderSession
from svckit.rpcmux import UnaryMux

log = logging.getLogger(__name__)
RELEASE_RETRY_DELAYS_S = (0.1, 0.5, 2.0)


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    provider_id: str
    provider_version: str
    queued_s: float


@dataclass(frozen=True)
class Speed:
    """What one attempt measured of its provider (C5; registry.proto `AttemptSpeed`).
    `ttft_s` None: no first-content sample; `no_content`: `ttft_s` is a lower bound (a slow
    sample); `decode_tps` 0: not measured."""

    ttft_s: float | None = None
    no_content: bool = False
    decode_tps: float = 0.0

    def to_proto(self) -> registry_pb2.AttemptSpeed:
        speed = registry_pb2.AttemptSpeed(no_content=self.no_content, decode_tps=self.decode_tps)
        if self.ttft_s is not None:
            speed.ttft_s = self.ttft_s
        return speed


class NoReservation(Exception):
    """Reserve found no provider: the registry's refusal (an unreachable registry is a 503)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure

    @property
    def http_status(self) -> int:
        return self.failure.status

    @property
    def retry_after_s(self) -> float:
        return self.failure.retry_after_s


class SlotsUnavailable(Exception):
    """The Slots stream broke (or could not be opened) before the answer came."""


class GrpcRegistry:
    """Implements the link layer's RegistryPort and the dispatcher's reserve/release calls.
    Those two share one `Slots` stream: a call in flight when it ends fails with
    SlotsUnavailable, and the registry releases what the stream held (B12)."""

    def __init__(self, channel: grpc.aio.Channel, rpc_timeout_s: float = 5.0) -> None:
        self._stub = registry_pb2_grpc.RegistryStub(channel)
        self._timeout = rpc_timeout_s
        self._slots: UnaryMux[registry_pb2.SlotCall, registry_pb2.SlotAnswer]
        self._slots = UnaryMux("slots", self._stub.Slots, SlotsUnavailable)
        self._background: set[asyncio.Task[bool]] = set()
        # Each link session upserted gets a name the registry keys registrations by: an
        # upsert of a session already named is an update (a ModelsUpdate), which must not
        # start the provider clean (C4). Unique across dispatcher processes (the prefix).
        self._session_prefix = secrets.token_hex(6)
        self._session_ids = itertools.count(1)
        self._sessions: weakref.WeakKeyDictionary[ProviderSession, str] = (
            weakref.WeakKeyDictionary()
        )

    async def aclose(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._slots.aclose()

    # --- RegistryPort (link layer): failures are logged, never raised into the session ---

    def session_name(self, session: ProviderSession) -> str:
        """The name of `session` on the wire (`UpsertProviderRequest.session`): the same for
        every upsert of one session object, never reused for another."""
        name = self._sessions.get(session)
        if name is None:
            name = self._sessions[session] = f"{self._session_prefix}.{next(self._session_ids)}"
        return name

    async def upsert(self, session: ProviderSession) -> None:
        """Register the session's provider, or update it (its models) when this session
        was upserted before."""
        info = registry_pb2.ProviderInfo(
            id=session.provider_id,
            serial=session.provider_id,
            version=session.version,
            models=session.models,
            trusted=session.trusted,
            decode_tps=session.decode_tps,
            prefill_tps=session.prefill_tps,
            hardware=session.hardware,
        )
        await self._quiet(
            "UpsertProvider",
            self._stub.UpsertProvider(
                registry_pb2.UpsertProviderRequest(
                    provider=info, session=self.session_name(session)
                ),
                timeout=self._timeout,
            ),
        )

    async def remove(self, provider_id: str) -> None:
        await self._quiet(
            "RemoveProvider",
            self._stub.RemoveProvider(
                registry_pb2.RemoveProviderRequest(provider_id=provider_id), timeout=self._timeout
            ),
        )

    async def report_load(
        self, provider_id: str, loads: list[link_pb2.ModelLoad], trusted: bool
    ) -> None:
        request = registry_pb2.ReportLoadRequest(
            provider_id=provider_id,
            trusted=trusted,
            loads=[
                registry_pb2.ModelLoad(
                    model=x.model,
                    running=x.running,
                    waiting=x.waiting,
                    max_concurrency=x.max_concurrency,
                )
                for x in loads
            ],
        )
        await self._quiet("ReportLoad", self._stub.ReportLoad(request, timeout=self._timeout))

    async def _quiet(self, name: str, call: grpc.aio.UnaryUnaryCall) -> None:  # type: ignore[type-arg]
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            log.warning("registry call failed", extra={"rpc": name, "code": exc.code().name})

    # --- dispatch -------------------------------------------------------------------

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
        reservation_id: str = "",
    ) -> Reservation:
        """Select a provider and take a slot; may wait in the queue up to `timeout_s`."""
        request = registry_pb2.ReserveRequest(
            model=model,
            traits=traits,
            exclude=list(exclude),
            avoid_version=avoid_version,
            allowlist=list(allowlist),
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            may_queue=may_queue,
            reservation_id=reservation_id,
        )
        call = registry_pb2.SlotCall(reserve=request, timeout_s=timeout_s)
        try:
            answer = await self._slots.call(call, timeout_s + self._timeout)
        except SlotsUnavailable as exc:
            if reservation_id:
                # The answer is late or lost, not necessarily the grant: give it back by
                # name, or it would stay held until the stream ends (B12).
                task = asyncio.get_running_loop().create_task(
                    self.release(reservation_id, RELEASE_CANCELLED)
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            raise NoReservation(Failure(ErrorCode.MODEL_UNAVAILABLE, str(exc))) from exc
        if answer.WhichOneof("answer") != "reserved":
            raise NoReservation(Failure.from_proto(answer.refused))
        reply = answer.reserved
        return Reservation(
            reply.reservation_id, reply.provider_id, reply.provider_version, reply.queued_s
        )

    async def release(
        self, reservation_id: str, status_code: int, speed: Speed | None = None
    ) -> bool:
        """Free the slot, feed the breaker and the measured speed (C5); returns whether a
        cooldown was entered.

        Retried with backoff (a Release is safe to repeat: the registry frees a slot once,
        and takes its speed sample with it), because a lost Release would hold the slot
        until the stream ends (B12)."""
        request = registry_pb2.ReleaseRequest(
            reservation_id=reservation_id, status_code=status_code
        )
        if speed is not None:
            request.speed.CopyFrom(speed.to_proto())
        for delay in (*RELEASE_RETRY_DELAYS_S, None):
            try:
                answer = await self._slots.call(
                    registry_pb2.SlotCall(release=request), self._timeout
                )
            except SlotsUnavailable as exc:
                if delay is None:
                    log.error(
                        "release failed", extra={"reservation": reservation_id, "error": str(exc)}
                    )
                    return False
                await asyncio.sleep(delay)
                continue
            return bool(answer.released.cooldown_entered)
        return False
