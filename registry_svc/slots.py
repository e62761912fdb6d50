"""The server side of the registry's `Slots` bidi stream: one `SlotSession` per dispatcher
stream, answering its reserves and releases (docs/multiplexer.md)."""

from __future__ import annotations

import logging

import grpc

from contract import registry_pb2
from registry_svc.errors import RegistryError
from registry_svc.model import Outcome
from registry_svc.registry import Registry
from registry_svc.wire import ask_from, release_reply, reply_from, speed_from
from svckit.rpcmux import StreamSession

log = logging.getLogger(__name__)


class SlotSession(StreamSession[registry_pb2.SlotCall]):
    """One dispatcher's `Slots` stream. A reserve with a free slot is answered inline; one
    that must wait in the queue (or be refused) runs as a call task, kept by its
    reservation id (its call id when unnamed), so a Release of that id cancels it.
    Reservations granted here and not released when the stream ends are released as
    cancelled: the dispatcher that held them is gone (B12)."""

    def __init__(self, registry: Registry, context: grpc.aio.ServicerContext) -> None:
        super().__init__(context)
        self._registry = registry
        self._held: set[str] = set()  # granted over this stream, not yet released

    async def on_message(self, message: registry_pb2.SlotCall) -> None:
        kind = message.WhichOneof("call")
        if kind == "release":
            await self._release(message)
        elif kind == "reserve":
            granted = self._registry.reserve_now(ask_from(message.reserve))
            if granted is not None:  # the common case, answered without a task
                self._held.add(granted.id)
                reply = reply_from(granted)
                await self.write(registry_pb2.SlotAnswer(call_id=message.call_id, reserved=reply))
                return
            key = message.reserve.reservation_id or f"#{message.call_id}"
            if not self.spawn(key, self._reserve(message)):
                # The same reservation id twice while the first still waits: the peer's bug.
                await self._refuse(message, RegistryError("reservation id already waiting"))

    async def on_end(self) -> None:
        # Waiting reserves were cancelled and waited for already (StreamSession).
        if self._held:
            log.warning(
                "slot stream ended; releasing its reservations", extra={"count": len(self._held)}
            )
        for reservation_id in self._held:
            self._registry.release(reservation_id, Outcome(Outcome.CANCELLED))
        self._held.clear()

    async def _release(self, call: registry_pb2.SlotCall) -> None:
        rid = call.release.reservation_id
        self.cancel(rid)  # a Reserve of that id still waiting gives up
        self._held.discard(rid)
        outcome = Outcome(call.release.status_code, speed=speed_from(call.release))
        result = self._registry.release(rid, outcome)
        await self.write(
            registry_pb2.SlotAnswer(call_id=call.call_id, released=release_reply(result))
        )

    async def _reserve(self, call: registry_pb2.SlotCall) -> None:
        try:
            reservation = await self._registry.reserve(
                ask_from(call.reserve), timeout_s=call.timeout_s or None
            )
        except RegistryError as err:
            await self._refuse(call, err)
            return
        self._held.add(reservation.id)
        await self.write(
            registry_pb2.SlotAnswer(call_id=call.call_id, reserved=reply_from(reservation))
        )

    async def _refuse(self, call: registry_pb2.SlotCall, err: RegistryError) -> None:
        refused = err.failure().to_proto()
        await self.write(registry_pb2.SlotAnswer(call_id=call.call_id, refused=refused))
