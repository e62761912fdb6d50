"""The streamed answer: a server-sent event response over an async source of bytes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.disconnect import ClientGone, unless_client_gone

# Proxies (nginx) must pass events on as they come.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream(Response):
    """A server-sent event stream that stops (and closes its source, cancelling the
    dispatch) the moment the client hangs up (B12). What Starlette's StreamingResponse
    sends, without a task group per request.

    `body` yields whole SSE events; `headers` are the answer's own (A8), the SSE ones are
    added here. `client_gone` tells, once sent, whether the client hung up before the end."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers({**headers, **_SSE_HEADERS})
        self.client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # aclosing: a stream stopped early still runs the source's cleanup now.
        async with contextlib.aclosing(self.body_iterator) as body:  # type: ignore[type-var]
            # The first events came with Committed: they go out right behind the head,
            # before the client-gone watch is set up for the rest.
            first = await anext(body, None)
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if first is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send({"type": "http.response.body", "body": first, "more_body": True})
            try:
                await unless_client_gone(receive, self._pump(body, send))
            except ClientGone:
                self.client_gone = True

    @staticmethod
    async def _pump(body: AsyncIterator[bytes], send: Send) -> None:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
