"""Per-model FIFO wait queue (rule C6).

A waiter is an asyncio future plus the request it stands for. The queue only keeps order,
depth and deadlines; the registry decides whom to serve (``grant``) or fail (``fail``) when
a slot frees, a provider registers or leaves. A waiter whose future ends any other way (its
task was cancelled or timed out) removes itself, so a cancelled waiter leaves no trace.

Not thread-safe; use from one event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")
T = TypeVar("T")


@dataclass(eq=False, slots=True)
class Waiter(Generic[R, T]):
    """One queued request; ``future`` resolves to the grant or the failure."""

    model_id: str
    request: R
    enqueued_at: float
    deadline: float
    future: asyncio.Future[T]
    seq: int = field(default=0)


class WaitQueue(Generic[R, T]):
    """FIFO per model, at most ``max_depth`` live waiters each."""

    def __init__(self, *, max_depth: int) -> None:
        self._max_depth = max_depth
        self._by_model: dict[str, dict[int, Waiter[R, T]]] = {}
        self._seq = itertools.count()

    def push(self, model_id: str, request: R, *, now: float, wait_s: float) -> Waiter[R, T] | None:
        """Append a waiter (deadline ``now + wait_s``); None if the model's queue is full.

        Must be called with a running event loop (the future belongs to it).
        """
        waiters = self._by_model.setdefault(model_id, {})
        if len(waiters) >= self._max_depth:
            if not waiters:
                del self._by_model[model_id]
            return None
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        waiter = Waiter(model_id, request, now, now + wait_s, future, next(self._seq))
        waiters[waiter.seq] = waiter
        future.add_done_callback(lambda _f: self.remove(waiter))
        return waiter

    def remove(self, waiter: Waiter[R, T]) -> bool:
        """Drop ``waiter`` if still queued; True if it was."""
        waiters = self._by_model.get(waiter.model_id)
        if waiters is None or waiters.pop(waiter.seq, None) is None:
            return False
        if not waiters:
            del self._by_model[waiter.model_id]
        return True

    def waiting(self, model_id: str) -> list[Waiter[R, T]]:
        """Live waiters for ``model_id``, oldest first (a snapshot; safe to mutate during)."""
        waiters = self._by_model.get(model_id)
        if not waiters:
            return []
        return [w for w in waiters.values() if not w.future.done()]

    def depth(self, model_id: str) -> int:
        """Number of queued waiters for ``model_id``."""
        return len(self._by_model.get(model_id, ()))

    def depths(self) -> dict[str, int]:
        """Queue depth per model with anyone waiting."""
        return {model: len(waiters) for model, waiters in self._by_model.items()}

    def models(self) -> list[str]:
        """Models with at least one waiter."""
        return list(self._by_model)

    def grant(self, waiter: Waiter[R, T], result: T) -> bool:
        """Resolve ``waiter`` with ``result`` and dequeue it; False if it already ended."""
        self.remove(waiter)
        if waiter.future.done():
            return False
        waiter.future.set_result(result)
        return True

    def fail(self, waiter: Waiter[R, T], error: BaseException) -> bool:
        """Fail ``waiter`` with ``error`` and dequeue it; False if it already ended."""
        self.remove(waiter)
        if waiter.future.done():
            return False
        waiter.future.set_exception(error)
        return True

    def expired(self, now: float) -> list[Waiter[R, T]]:
        """Live waiters whose deadline is at or before ``now`` (oldest first per model)."""
        return [
            w
            for waiters in self._by_model.values()
            for w in waiters.values()
            if w.deadline <= now and not w.future.done()
        ]

    def __len__(self) -> int:
        return sum(len(waiters) for waiters in self._by_model.values())
