"""One sent attempt's link events, turned into the machine's events, while watching what
the provider does (B1, B6, C5): the driver runs `pump` as the attempt's task.

Providers are strangers: a chunk too big for one message of the `Dispatches` stream that
every request shares fails this attempt alone (502, the provider is charged), an `Accepted`
is believed only when a cold load is plausible (`speed.ColdLoads`), an error's text is cut,
and the attempt's times are noted for its speed sample (`speed.AttemptClock`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, assert_never

from contract.chunks import is_boilerplate
from dispatcher_svc.dispatch.events import (
    Accepted,
    AttemptEvent,
    Chunk,
    Completed,
    Disconnected,
    ProviderError,
    Usage,
)
from dispatcher_svc.dispatch.ports import Clock, LinkAttempt
from dispatcher_svc.dispatch.speed import AttemptClock, ColdLoads
from dispatcher_svc.link import (
    LinkAccepted,
    LinkChunk,
    LinkComplete,
    LinkDisconnected,
    LinkError,
)

__all__ = ["MAX_ERROR_MESSAGE_CHARS", "Watch", "pump"]

# A provider's error message is its own text: it reaches the client, the logs and a shared
# stream's message, so it is cut (the link cuts it too; this holds whatever the link does).
MAX_ERROR_MESSAGE_CHARS: Final = 1024


@dataclass(frozen=True, slots=True)
class Watch:
    """What is checked of every attempt of one request: its `model`, the largest chunk
    (`max_chunk_bytes`), the dispatcher's cold-load memory, the clock."""

    model: str
    max_chunk_bytes: int
    cold_loads: ColdLoads
    clock: Clock


async def pump(
    link: LinkAttempt,
    session: object,
    attempt_id: int,
    put: Callable[[AttemptEvent], None],
    times: AttemptClock,
    watch: Watch,
) -> bool:
    """Put the attempt's events until its first terminal one, noting its times in `times`.

    Returns True when the attempt ended by itself (the caller forgets it, no Cancel frame);
    False when it was refused here (an oversized chunk: a 502 was put and the provider told
    Cancel). `session` is the attempt's link session (the cold-load memory's key).
    """
    limit, clock, cold_loads, model = (
        watch.max_chunk_bytes,
        watch.clock,
        watch.cold_loads,
        watch.model,
    )
    content_chunks = 0  # from the first content on: 0 until it came
    while True:
        event = await link.next_event()
        match event:
            case LinkChunk():
                payload = event.payload
                if len(payload) > limit:
                    message = f"provider sent a {len(payload)}-byte chunk (limit {limit})"
                    put(ProviderError(attempt_id, 502, message))
                    await asyncio.shield(link.cancel())
                    return False
                if content_chunks:
                    content_chunks += 1  # the hot path: relayed as is
                    put(Chunk(attempt_id, payload, False))
                    continue
                # Only chunks up to this attempt's first content need classifying: that one
                # commits the attempt (or it has lost the race), and every later chunk is
                # relayed or dropped as is.
                boilerplate = is_boilerplate(payload)
                if not boilerplate:
                    content_chunks = 1
                    times.first_content_at = clock()
                    cold_loads.served(session, model)  # B6: it is loaded now
                put(Chunk(attempt_id, payload, boilerplate))
                continue
            case LinkAccepted():
                plausible = cold_loads.accepted(session, model, clock())
                times.cold = times.cold or plausible
                put(Accepted(attempt_id, plausible))
                continue
            case LinkComplete():
                u = event.usage
                times.completed_at = clock()
                times.content_chunks = content_chunks
                times.completion_tokens = u.completion_tokens
                put(
                    Completed(
                        attempt_id, Usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
                    )
                )
            case LinkError():
                put(
                    ProviderError(attempt_id, event.status, event.message[:MAX_ERROR_MESSAGE_CHARS])
                )
            case LinkDisconnected():
                put(Disconnected(attempt_id))
            case _:
                assert_never(event)
        return True
