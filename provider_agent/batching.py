"""Groups an async stream into the items that were ready together.

An engine's chunks often arrive many per network read; sending each in its own link frame
costs a frame, a protobuf and a socket write apiece on both ends. `ready_batches` runs the
source in its own task and hands over, at each step, everything it has produced so far:
the first item never waits for company (no added latency), and under load the batches grow
by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _End:
    error: BaseException | None


@dataclass(frozen=True)
class _Item(Generic[T]):
    value: T


async def ready_batches(
    source: AsyncIterator[T],
    *,
    max_pending: int = 256,
    urgent: Callable[[T], bool] | None = None,
) -> AsyncGenerator[list[T], None]:
    """Yield non-empty lists of consecutive items of `source`, in order. An error of the
    source is raised after the items before it were yielded. Closing (or cancelling) the
    consumer cancels the source at once; at most `max_pending` items are read ahead.

    An item for which `urgent` is true is handed over before the source goes on: the
    source may hold a burst of items read at once, and this one should not wait for the
    work on the rest (the provider's first content chunk: what the client is waiting for).
    """
    queue: asyncio.Queue[_Item[T] | _End] = asyncio.Queue(max_pending)

    async def pump() -> None:
        try:
            async for value in source:
                await queue.put(_Item(value))
                if urgent is not None and urgent(value):
                    await asyncio.sleep(0)  # the consumer takes it (and what came before)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, raised there in order
            await queue.put(_End(exc))
            return
        await queue.put(_End(None))

    task = asyncio.get_running_loop().create_task(pump())
    try:
        while True:
            first = await queue.get()
            entries = [first]
            while not queue.empty():
                entries.append(queue.get_nowait())
            values = [e.value for e in entries if isinstance(e, _Item)]
            if values:
                yield values
            end = entries[-1]
            if isinstance(end, _End):
                if end.error is not None:
                    raise end.error
                return
            # Let the source bring in whatever is already buffered before the next batch.
            await asyncio.sleep(0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
