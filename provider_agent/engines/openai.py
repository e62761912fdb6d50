"""Streams from any OpenAI-compatible server (vLLM, llama.cpp, Ollama, SGLang, MLX...) (E5).

Chunks pass through as the upstream's own bytes (no re-encoding); the upstream's `[DONE]`
terminator is swallowed and the usage it reports is carried in `Finished`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from provider_agent.engines.base import EngineError, EngineOutput, Finished, GenerateRequest

_RETRYABLE_AS_502 = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


def upstream_status(status: int) -> int:
    """Map an upstream HTTP status to the error frame's status."""
    if status in (400, 404, 413, 415, 422, 429, 503):
        return status
    if status >= 500:
        return 500
    return 502


class OpenAIEngine:
    def __init__(self, base_url: str, *, timeout_s: float = 600.0, api_key: str = "") -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            headers=headers,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[EngineOutput]:
        body: dict[str, Any] = dict(request.body)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        path = "/v1/completions" if request.completions else "/v1/chat/completions"
        usage: dict[str, Any] = {}
        produced = 0
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise EngineError(
                        upstream_status(response.status_code),
                        f"upstream {response.status_code}: {detail}",
                    )
                done = False
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    payload = data.encode()
                    if '"usage"' in data:
                        parsed = json.loads(data)
                        if isinstance(parsed.get("usage"), dict):
                            usage = parsed["usage"]
                        if not parsed.get("choices"):
                            continue  # usage-only trailer: carried in Finished, not relayed
                    produced += 1
                    yield payload
                if not done:
                    raise EngineError(502, "upstream stream ended without [DONE]")
        except _RETRYABLE_AS_502 as exc:
            raise EngineError(502, f"upstream connection failed: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise EngineError(504, "upstream timed out") from exc
        yield Finished(
            int(usage.get("prompt_tokens") or request.prompt_tokens),
            int(usage.get("completion_tokens") or produced),
        )
