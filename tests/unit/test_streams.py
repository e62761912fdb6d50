"""Shared gRPC stream writes: a caller's cancellation never cuts a write in half (grpc.aio
would cancel the whole shared stream), and messages keep the order they were sent in."""

from __future__ import annotations

import asyncio

import pytest

from svckit.rpcmux import SharedWriter


class Wire:
    def __init__(self) -> None:
        self.written: list[str] = []
        self.gate = asyncio.Event()
        self.cut = False

    async def write(self, message: str) -> None:
        try:
            await self.gate.wait()  # a write in flight (flow control, a slow peer)
        except asyncio.CancelledError:
            self.cut = True  # what grpc.aio turns into cancelling the whole stream
            raise
        self.written.append(message)


async def test_a_cancelled_caller_does_not_cancel_its_write() -> None:
    wire = Wire()
    writer = SharedWriter(wire.write)
    caller = asyncio.create_task(writer.send("reserve"))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    wire.gate.set()
    await writer.send("next")
    assert wire.written == ["reserve", "next"] and not wire.cut


async def test_messages_go_out_one_at_a_time_in_order() -> None:
    wire = Wire()
    writer = SharedWriter(wire.write)
    senders = [asyncio.create_task(writer.send(f"m{i}")) for i in range(5)]
    await asyncio.sleep(0.01)
    senders[2].cancel()
    wire.gate.set()
    await asyncio.gather(*senders, return_exceptions=True)
    assert wire.written == [f"m{i}" for i in range(5)]


async def test_a_failed_write_raises_to_its_caller() -> None:
    async def broken(_message: str) -> None:
        raise ConnectionError("stream gone")

    with pytest.raises(ConnectionError):
        await SharedWriter(broken).send("x")
