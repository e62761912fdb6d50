"""Dispatch fakes: scripted provider links and a registry that hands providers out in order,
fitting the dispatch driver's ports (dispatcher_svc/dispatch/ports.py), no sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from contract import hedgerow_common_pb2 as common_pb2
from dispatcher_svc.link import LinkComplete, LinkEvent
from dispatcher_svc.registry_client import Reservation, Speed

CONTENT = json.dumps({"choices": [{"index": 0, "delta": {"content": "hi"}}]}).encode()
DONE = LinkComplete(common_pb2.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2))
STALL = "stall"  # the attempt sends nothing at all


class FakeAttempt:
    def __init__(self, attempt_id: str, script: Sequence[LinkEvent | str]) -> None:
        self.attempt_id = attempt_id
        self._queue: asyncio.Queue[LinkEvent] = asyncio.Queue()
        for event in script:
            if event == STALL:
                break
            assert not isinstance(event, str)
            self._queue.put_nowait(event)

    async def next_event(self) -> LinkEvent:
        return await self._queue.get()

    async def cancel(self) -> None:
        return None


class FakeSession:
    def __init__(self, script: Sequence[LinkEvent | str]) -> None:
        self.script = script

    async def start_attempt(self, attempt_id: str, body: bytes, *, completions: bool) -> Any:
        return FakeAttempt(attempt_id, self.script)

    async def cancel(self, attempt_id: str) -> None:
        return None

    def finish(self, attempt_id: str) -> None:
        return None


class FakeLinks:
    def __init__(self, scripts: dict[str, Sequence[LinkEvent | str]]) -> None:
        self.sessions = {pid: FakeSession(script) for pid, script in scripts.items()}

    def get(self, provider_id: str) -> FakeSession | None:
        return self.sessions.get(provider_id)


class FakeRegistry:
    """Hands out the providers in order; records every release (and its speed sample)."""

    def __init__(self, providers: Sequence[str]) -> None:
        self.queue = list(providers)
        self.released: list[tuple[str, int]] = []
        self.speeds: dict[str, Speed | None] = {}

    async def reserve(self, **_: Any) -> Reservation:
        provider = self.queue.pop(0)
        return Reservation(f"r-{provider}", provider, "1.0", 0.0)

    async def release(
        self, reservation_id: str, status_code: int, speed: Speed | None = None
    ) -> bool:
        self.released.append((reservation_id, status_code))
        self.speeds[reservation_id] = speed
        return False
