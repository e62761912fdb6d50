"""The dispatcher's view of the registry, over gRPC."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from dispatcher_svc.link import ProviderSession
from protos import hedgerow_common_pb2 as common_pb2
from protos import provider_link_pb2 as link_pb2
from protos import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)
RELEASE_RETRY_DELAYS_S = (0.1, 0.5, 2.0)


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    provider_id: str
    provider_version: str
    queued_s: float


class NoReservation(Exception):
    """Reserve found no provider: the registry's HTTP status, code, message and retry-after
    (carried in trailing metadata; an unreachable registry is a 503)."""

    def __init__(self, http_status: int, code: str, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.http_status = http_status
        self.code = code
        self.detail = detail
        self.retry_after_s = retry_after_s

    @classmethod
    def from_rpc_error(cls, exc: grpc.aio.AioRpcError) -> NoReservation:
        trailers = {k: v for k, v in (exc.trailing_metadata() or ()) if isinstance(v, str)}
        try:
            status = int(trailers.get("hedgerow-http-status", "503"))
            retry_after = float(trailers.get("hedgerow-retry-after", "0"))
        except ValueError:
            status, retry_after = 503, 0.0
        code = trailers.get("hedgerow-code", "model_unavailable")
        return cls(status, code, exc.details() or "registry unavailable", retry_after)


class GrpcRegistry:
    """Implements the link layer's RegistryPort and the dispatcher's reserve/release calls."""

    def __init__(self, channel: grpc.aio.Channel, rpc_timeout_s: float = 5.0) -> None:
        self._stub = registry_pb2_grpc.RegistryStub(channel)
        self._timeout = rpc_timeout_s

    # --- RegistryPort (link layer): failures are logged, never raised into the session ---

    async def upsert(self, session: ProviderSession) -> None:
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
                registry_pb2.UpsertProviderRequest(provider=info), timeout=self._timeout
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
        try:
            reply = await self._stub.Reserve(request, timeout=timeout_s + self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise NoReservation.from_rpc_error(exc) from exc
        return Reservation(
            reply.reservation_id, reply.provider_id, reply.provider_version, reply.queued_s
        )

    async def release(self, reservation_id: str, status_code: int) -> bool:
        """Free the slot and feed the breaker; returns whether a cooldown was entered.

        Retried with backoff (a Release is safe to repeat: the registry frees a slot once),
        because a lost Release would hold the slot for good (B12)."""
        request = registry_pb2.ReleaseRequest(
            reservation_id=reservation_id, status_code=status_code
        )
        for delay in (*RELEASE_RETRY_DELAYS_S, None):
            try:
                reply = await self._stub.Release(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                if delay is None:
                    log.error(
                        "release failed",
                        extra={"reservation": reservation_id, "code": exc.code().name},
                    )
                    return False
                await asyncio.sleep(delay)
                continue
            return bool(reply.cooldown_entered)
        return False
