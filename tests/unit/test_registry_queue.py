"""C6: the per-model FIFO wait queue on its own."""

from __future__ import annotations

import asyncio

import pytest

from registry_svc.queue import Waiter, WaitQueue


def make(depth: int = 10) -> WaitQueue[str, str]:
    return WaitQueue(max_depth=depth)


async def test_c6_fifo_order_per_model() -> None:
    q = make()
    a = q.push("m", "a", now=0, wait_s=120)
    b = q.push("m", "b", now=1, wait_s=120)
    other = q.push("x", "o", now=2, wait_s=120)
    assert a and b and other
    assert [w.request for w in q.waiting("m")] == ["a", "b"]
    assert q.depth("m") == 2 and q.depth("x") == 1 and len(q) == 3
    assert q.depths() == {"m": 2, "x": 1}
    assert sorted(q.models()) == ["m", "x"]


async def test_c6_depth_limit_per_model() -> None:
    q = make(depth=2)
    assert q.push("m", "a", now=0, wait_s=1)
    assert q.push("m", "b", now=0, wait_s=1)
    assert q.push("m", "c", now=0, wait_s=1) is None
    assert q.push("x", "d", now=0, wait_s=1) is not None


async def test_c6_zero_depth_queues_nothing() -> None:
    q = make(depth=0)
    assert q.push("m", "a", now=0, wait_s=1) is None
    assert q.depths() == {}


async def test_c6_grant_resolves_and_dequeues() -> None:
    q = make()
    w = q.push("m", "a", now=0, wait_s=1)
    assert w is not None
    assert q.grant(w, "slot")
    assert await w.future == "slot"
    assert q.depth("m") == 0 and q.depths() == {}
    assert not q.grant(w, "again")


async def test_c6_fail_sets_the_error() -> None:
    q = make()
    w = q.push("m", "a", now=0, wait_s=1)
    assert w is not None
    assert q.fail(w, RuntimeError("gone"))
    with pytest.raises(RuntimeError, match="gone"):
        await w.future
    assert not q.fail(w, RuntimeError("again"))


async def test_c6_cancelled_waiter_leaves_no_trace() -> None:
    q = make()
    first = q.push("m", "a", now=0, wait_s=1)
    second = q.push("m", "b", now=0, wait_s=1)
    assert first and second

    async def wait(w: Waiter[str, str]) -> str:
        return await w.future

    task = asyncio.create_task(wait(first))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # done-callbacks run on the next loop turn
    assert [w.request for w in q.waiting("m")] == ["b"]
    assert q.depth("m") == 1
    assert not q.grant(first, "late")


async def test_c6_expired_lists_waiters_past_their_deadline() -> None:
    q = make()
    a = q.push("m", "a", now=0, wait_s=10)
    b = q.push("m", "b", now=5, wait_s=10)
    assert a and b
    assert q.expired(9.9) == []
    assert q.expired(10) == [a]
    assert q.expired(15) == [a, b]
    assert a.deadline == 10 and b.enqueued_at == 5


async def test_c6_remove_is_idempotent() -> None:
    q = make()
    w = q.push("m", "a", now=0, wait_s=1)
    assert w is not None
    assert q.remove(w)
    assert not q.remove(w)
    assert q.waiting("m") == []
