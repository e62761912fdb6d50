"""Every service runs on uvloop: the event loop is the hot path of relaying chunks."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on a uvloop event loop."""
    return uvloop.run(main)
