"""Turns one decrypted request into engine output (rule E4).

Tool schemas are repaired with the normalizer's pure module (defence for requests that
reach a provider by another path), the model's chat template is rendered exactly as the
self-check renders it, and the engine generates from that prompt.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any

from contract.schema import repair_tools
from provider_agent.engines.base import Engine, EngineError, EngineOutput, GenerateRequest
from provider_agent.scan import ModelCard, TemplateCache, TemplateRenderError, render_prompt
from provider_agent.templates import Strictness, TemplateCompileError


def estimate_tokens(text: str) -> int:
    return len(text.encode()) // 4 + 1


def completions_prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = "".join(p for p in prompt if isinstance(p, str))
    if not isinstance(prompt, str):
        raise EngineError(400, "prompt must be a string")
    return prompt


class RequestHandler:
    def __init__(self, cards: dict[str, ModelCard], engine: Engine, strictness: Strictness) -> None:
        self.cards = cards
        self.engine = engine
        self._strictness = strictness
        # Compile each template once per agent, not once per request.
        self._templates = TemplateCache()

    def warm_templates(self) -> int:
        """Compile every template a request can use now, at start, so that no client waits
        for a compile (tens of milliseconds) on the first request to each model. Returns
        how many templates are compiled; one that does not compile is left to fail its
        requests with the render error (its model is never routed anyway, E3)."""
        for card in self.cards.values():
            for tools in (False, True):
                index = card.source_index(tools=tools)
                if index is not None:
                    with contextlib.suppress(TemplateCompileError):
                        self._templates.get(card.sources[index].text, self._strictness)
        return len(self._templates)

    def prepare(self, request_id: str, raw: bytes, *, completions: bool) -> GenerateRequest:
        """Parse, repair and render; raises EngineError (400/404/500) with a clear message."""
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise EngineError(400, "request body is not valid JSON") from exc
        if not isinstance(body, dict):
            raise EngineError(400, "request body must be a JSON object")
        model = body.get("model")
        card = self.cards.get(model) if isinstance(model, str) else None
        if card is None:
            raise EngineError(404, f"model {model!r} is not served here")
        if completions:
            prompt = completions_prompt(body)
        else:
            messages = body.get("messages")
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise EngineError(400, "messages must be an array of objects")
            tools = body.get("tools")
            if isinstance(tools, list):
                repair_tools(tools)
            try:
                prompt = render_prompt(
                    card,
                    messages,
                    tools=tools if isinstance(tools, list) and tools else None,
                    strictness=self._strictness,
                    cache=self._templates,
                )
            except TemplateRenderError as exc:
                raise EngineError(500, f"chat template render failed: {exc}") from exc
        return GenerateRequest(
            request_id=request_id,
            model=card.id,
            body=body,
            completions=completions,
            prompt=prompt,
            prompt_tokens=estimate_tokens(prompt),
        )

    def run(self, request: GenerateRequest) -> AsyncGenerator[EngineOutput, None]:
        return self.engine.generate(request)
