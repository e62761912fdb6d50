"""Streams from any OpenAI-compatible server (vLLM, llama.cpp, Ollama, SGLang, MLX...) (E5).

Chunks pass through as the upstream's own bytes (no re-encoding); the upstream's `[DONE]`
terminator is swallowed and the usage it reports is carried in `Finished`. Upstream
failures become `EngineError`s whose status the dispatcher understands (`upstream_status`):
the client's own mistakes stay 4xx (not retried, B11), overload stays 429/503 (retried,
never counted by the breaker), and everything else that is the upstream's fault is a
500/502/504 (retried elsewhere and counted, C4).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from provider_agent.engines.base import EngineError, EngineOutput, Finished, GenerateRequest
from provider_agent.engines.http1 import Http1Client, HttpError, HttpTimeout

# Client errors the router must not retry elsewhere (B11) and overload signals it should.
_PASSTHROUGH = frozenset({400, 413, 415, 422, 429, 500, 502, 503, 504})
# Keys that steer the router and mean nothing (or an error) to an engine.
_ROUTER_KEYS = ("provider",)
_MAX_DETAIL = 500


def upstream_status(status: int) -> int:
    """Map an upstream HTTP status to the error frame's status.

    400/413/415/422 are the request's fault and stay as they are (not retried); 429 and
    503 mean busy (retried elsewhere, not counted by the breaker); 500/502/504 stay as
    they are. 408 is a timeout (504). Anything else (401/403: a misconfigured upstream,
    404: the upstream does not serve the model we advertised, other 4xx/5xx, 3xx) is this
    provider's failure, not the client's: 502 for 4xx/3xx, 500 for other 5xx."""
    if status in _PASSTHROUGH:
        return status
    if status == 408:
        return 504
    if status >= 500:
        return 500
    return 502


def _error_detail(raw: bytes) -> str:
    """The upstream's error message: OpenAI `{"error": {"message"}}`, `{"error": "..."}`
    (Ollama, llama.cpp), FastAPI `{"detail"}`, else the text itself, truncated."""
    text = raw.decode(errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:_MAX_DETAIL]
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:_MAX_DETAIL]
        for value in (err, doc.get("message"), doc.get("detail")):
            if isinstance(value, str):
                return value[:_MAX_DETAIL]
    return text[:_MAX_DETAIL]


_EVENT_END = re.compile(rb"\r?\n\r?\n")


def _read_events(
    events: list[bytes], batch: list[bytes], usage: dict[str, Any], model: str
) -> bool:
    """Append the relayed chunks of complete SSE `events` to `batch`; True at `[DONE]`."""
    for event in events:
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue  # SSE comments, `event:` lines, keep-alives
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return True
            relayed = _checked(payload, usage, model)
            if relayed is not None:
                batch.append(relayed)
    return False


def _checked(payload: bytes, usage: dict[str, Any], model: str) -> bytes | None:
    """Check one upstream chunk and return what to relay: None for a usage-only trailer
    (its usage goes to `usage`); the chunk renamed to our model id when the engine serves
    it under another name. Raises EngineError for malformed chunks and error events."""
    try:
        parsed = json.loads(payload)
    except ValueError as exc:
        bad = payload[:200].decode(errors="replace")
        raise EngineError(502, f"upstream sent a malformed chunk: {bad}") from exc
    if not isinstance(parsed, dict):
        raise EngineError(502, "upstream sent a chunk that is not an object")
    if "error" in parsed and "choices" not in parsed:
        # vLLM / llama.cpp report mid-stream failures as an error event.
        raise EngineError(500, f"upstream error: {_error_detail(payload)}")
    if isinstance(parsed.get("usage"), dict):
        usage.update(parsed["usage"])
        if not parsed.get("choices"):
            return None  # usage-only trailer: carried in Finished, not relayed
    if parsed.get("model") != model:
        # The router answers with the public id (A9); renaming here keeps that cost on
        # the provider instead of the gateway.
        parsed["model"] = model
        return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    return payload


class OpenAIEngine:
    """One pool of keep-alive upstream connections per agent; `aclose()` at shutdown."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        api_key: str = "",
    ) -> None:
        headers = {"accept": "text/event-stream"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        # Accept both `http://host:port` and `http://host:port/v1`.
        self._prefix = "" if base_url.rstrip("/").endswith("/v1") else "/v1"
        self._client = Http1Client(
            base_url,
            headers=headers,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=timeout_s,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[EngineOutput, None]:
        body: dict[str, Any] = {k: v for k, v in request.body.items() if k not in _ROUTER_KEYS}
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        path = self._prefix + ("/completions" if request.completions else "/chat/completions")
        encoded = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        usage: dict[str, Any] = {}
        produced = 0
        try:
            async with self._client.post(path, encoded) as response:
                if response.status != 200:
                    detail = _error_detail(await response.read())
                    raise EngineError(
                        upstream_status(response.status),
                        f"upstream {response.status}: {detail}",
                    )
                done = False
                pending = b""
                received = response.stream()
                async for data in received:
                    *events, pending = _EVENT_END.split(pending + data)
                    batch: list[bytes] = []
                    failure: EngineError | None = None
                    try:
                        done = _read_events(events, batch, usage, request.model)
                    except EngineError as exc:
                        failure = exc  # deliver the good chunks before it first
                    for chunk in batch:
                        produced += 1
                        yield chunk
                    if failure is not None:
                        raise failure
                    if done:
                        # Read to the end of the body (the chunked terminator) so the
                        # connection goes back to the pool instead of being closed.
                        async for _ in received:
                            pass
                        break
                if not done:
                    raise EngineError(502, "upstream stream ended without [DONE]")
        except HttpTimeout as exc:
            raise EngineError(504, f"upstream timed out: {exc}") from exc
        except HttpError as exc:
            raise EngineError(502, f"upstream connection failed: {exc}") from exc
        yield Finished(
            int(usage.get("prompt_tokens") or request.prompt_tokens),
            int(usage.get("completion_tokens") or produced),
        )
