"""B12 at the edge: a request whose client hangs up stops waiting at once (ClientGone),
while any other cancellation (a server shutdown) stays a cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.disconnect import ClientGone, unless_client_gone


def current() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None
    return task


class Client:
    """An ASGI `receive` that reports a disconnect once `leave()` is called."""

    def __init__(self) -> None:
        self._left = asyncio.Event()

    def leave(self) -> None:
        self._left.set()

    async def receive(self) -> dict[str, Any]:
        await self._left.wait()
        return {"type": "http.disconnect"}


async def test_result_when_the_work_finishes_first() -> None:
    client = Client()

    async def work() -> str:
        await asyncio.sleep(0)
        return "committed"

    assert await unless_client_gone(client.receive, work()) == "committed"
    client.leave()
    await asyncio.sleep(0.01)  # a late disconnect must not cancel the caller afterwards
    assert not current().cancelling()


async def test_client_gone_stops_the_wait_and_cancels_the_work() -> None:
    client = Client()
    stopped = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()
        return "never"

    asyncio.get_running_loop().call_later(0.01, client.leave)
    with pytest.raises(ClientGone):
        await unless_client_gone(client.receive, work())
    assert stopped.is_set()
    assert not current().cancelling()


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    client = Client()

    async def handler() -> None:
        await unless_client_gone(client.receive, asyncio.sleep(30))

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_client_leaving_during_an_outside_cancellation_is_not_swallowed() -> None:
    client = Client()

    async def handler() -> None:
        await unless_client_gone(client.receive, asyncio.sleep(30))

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.01)
    task.cancel()
    client.leave()
    with pytest.raises(asyncio.CancelledError):
        await task
