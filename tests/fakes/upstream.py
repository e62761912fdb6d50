"""A tiny OpenAI-compatible HTTP server (Starlette under uvicorn, in a thread, on
127.0.0.1 port 0) for testing the `openai` engine against real HTTP and SSE.

Behaviour is chosen per request by a marker in the last message's text (or the prompt):

- none: a role chunk, the words of `WORDS` as content chunks, a finish chunk, a
  usage-only chunk and `data: [DONE]`;
- `[[up:status=NNN]]`: HTTP NNN with an OpenAI-shaped error body (message `upstream
  says NNN`);
- `[[up:slow]]`: a role chunk, then one content chunk every 10 ms for a long time (the
  server records when the client went away);
- `[[up:nodone]]`: content, then the stream just ends without `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

WORDS = ("upstream", " says", " hello")
_MARKER = re.compile(r"\[\[up:([a-z]+)(?:=(\d+))?\]\]")


def _last_text(body: dict[str, Any]) -> str:
    if isinstance(body.get("prompt"), str):
        return str(body["prompt"])
    messages = body.get("messages") or []
    content = messages[-1].get("content") if messages else ""
    return content if isinstance(content, str) else json.dumps(content)


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.slow_started = threading.Event()
        self.slow_gone_at: float | None = None  # monotonic time the slow stream was closed
        self.slow_gone = threading.Event()
        self.port = 0
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._chat, methods=["POST"]),
            ]
        )
        self._server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.01)
        return self

    def reset_slow(self) -> None:
        self.slow_started.clear()
        self.slow_gone.clear()
        self.slow_gone_at = None

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        completions = request.url.path.endswith("/v1/completions")
        marker = _MARKER.search(_last_text(body))
        kind, arg = (marker.group(1), marker.group(2)) if marker else ("", None)
        if kind == "status" and arg:
            status = int(arg)
            return JSONResponse(
                {"error": {"message": f"upstream says {status}", "type": "server_error"}},
                status_code=status,
            )
        return StreamingResponse(
            self._stream(body.get("model", ""), kind, completions),
            media_type="text/event-stream",
        )

    async def _stream(self, model: str, kind: str, completions: bool) -> AsyncIterator[str]:
        head = {
            "id": "chatcmpl-up",
            "object": "text_completion" if completions else "chat.completion.chunk",
            "created": 1,
            "model": model,
        }

        def event(choices: list[dict[str, Any]], **extra: Any) -> str:
            return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

        def content(text: str) -> str:
            if completions:
                return event([{"index": 0, "text": text, "finish_reason": None}])
            return event([{"index": 0, "delta": {"content": text}, "finish_reason": None}])

        if not completions:
            yield event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
        if kind == "slow":
            self.slow_started.set()
            try:
                for i in range(100_000):
                    await asyncio.sleep(0.01)
                    yield content(f" w{i}")
            finally:
                self.slow_gone_at = time.monotonic()
                self.slow_gone.set()
            return
        yield ": keep-alive comment\n\n"
        for word in WORDS:
            yield content(word)
        if kind == "nodone":
            return
        finish = (
            {"index": 0, "text": "", "finish_reason": "stop"}
            if completions
            else {"index": 0, "delta": {}, "finish_reason": "stop"}
        )
        yield event([finish])
        usage = {"prompt_tokens": 7, "completion_tokens": len(WORDS), "total_tokens": 10}
        yield event([], usage=usage)
        yield "data: [DONE]\n\n"


@contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    try:
        yield server
    finally:
        server.stop()
