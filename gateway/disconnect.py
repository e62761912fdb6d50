"""Noticing that the client hung up while the gateway waits on the dispatch (B12).

uvicorn does not cancel a handler whose client left; without this, a request whose client
is gone would keep its dispatch, and the provider slots behind it, until the answer ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before anything was written."""


async def _client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def unless_client_gone(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in this task, but give up (ClientGone) as soon as the client hangs up.
    The caller cancels the dispatch call.

    A watcher task cancels this one when the disconnect arrives; that cancellation (and
    only that one) becomes ClientGone, as `asyncio.timeout` does with its own. Any other
    cancellation (a server shutdown) stays a cancellation."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await _client_gone(receive)
        left = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()
