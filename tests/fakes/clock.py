"""A clock the test moves by hand, for everything that takes an injected clock."""

from __future__ import annotations


class FakeClock:
    """A monotonic clock: `clock()` reads it, `advance(s)` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
