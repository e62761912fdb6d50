"""The provider's frame batching: items that were ready together travel together, in
order, with nothing held back and errors raised after the items before them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from provider_agent.batching import ready_batches
from provider_agent.engines.base import Accepted
from provider_agent.link import FirstContent


async def burst_then_trickle(log: list[str]) -> AsyncIterator[int]:
    try:
        for i in range(5):  # already "buffered": no awaiting between them
            yield i
        await asyncio.sleep(0.01)
        yield 5
        await asyncio.sleep(0.01)
        yield 6
    finally:
        log.append("closed")


async def test_burst_is_batched_and_order_kept() -> None:
    log: list[str] = []
    batches = [b async for b in ready_batches(burst_then_trickle(log))]
    assert [x for b in batches for x in b] == list(range(7))
    assert len(batches) < 7, "the burst must not go one item per batch"
    assert batches[-2:] == [[5], [6]]
    assert log == ["closed"]


async def test_first_item_is_not_held_back() -> None:
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[str]:
        yield "first"
        await gate.wait()
        yield "second"

    gen = ready_batches(slow())
    assert await asyncio.wait_for(gen.__anext__(), 1) == ["first"]
    gate.set()
    assert await gen.__anext__() == ["second"]
    await gen.aclose()


async def test_error_comes_after_the_items_before_it() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        yield 2
        raise ValueError("engine broke")

    seen: list[int] = []
    with pytest.raises(ValueError, match="engine broke"):
        async for batch in ready_batches(failing()):
            seen.extend(batch)
    assert seen == [1, 2]


async def test_closing_the_consumer_cancels_the_source() -> None:
    log: list[str] = []

    async def endless() -> AsyncIterator[int]:
        try:
            while True:
                yield 1
                await asyncio.sleep(0.001)
        finally:
            log.append("source closed")

    async with contextlib.aclosing(ready_batches(endless())) as gen:
        async for _ in gen:
            break
    assert log == ["source closed"]


async def test_an_urgent_item_does_not_wait_for_the_rest_of_its_burst() -> None:
    """B1/latency: the first content chunk of a burst goes out with what came before it,
    not after the work on everything read with it; the rest is still batched."""
    log: list[str] = []
    batches = [b async for b in ready_batches(burst_then_trickle(log), urgent=lambda x: x == 1)]
    assert batches[0] == [0, 1]
    assert [x for b in batches for x in b] == list(range(7))
    assert len(batches) <= 4, "the rest of the burst is still batched"
    plain = [b async for b in ready_batches(burst_then_trickle([]))]
    assert plain[0] == [0, 1, 2, 3, 4], "without `urgent` the burst travels whole"


def test_first_content_is_urgent_once_and_never_boilerplate() -> None:
    role = b'{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
    content = b'{"choices":[{"index":0,"delta":{"content":"hi"}}]}'
    urgent = FirstContent()
    assert [urgent(x) for x in (role, Accepted(), role, content, content)] == [
        False,
        False,
        False,
        True,
        False,
    ]
