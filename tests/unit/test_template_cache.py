"""E4: a provider compiles each chat template once, not per request (an empty cache must
still be used and filled)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from provider_agent.config import SimSettings
from provider_agent.engines.sim import SimEngine
from provider_agent.handler import RequestHandler
from provider_agent.scan import TemplateCache, render_prompt, scan_models
from provider_agent.templates import Strictness

MODELS = Path(__file__).resolve().parents[2] / "stack" / "models"


def test_e4_render_prompt_fills_and_reuses_the_given_cache() -> None:
    card = next(c for c in scan_models(MODELS) if c.id == "hedgerow-sim-1")
    cache = TemplateCache()
    messages = [{"role": "user", "content": "hi"}]
    first = render_prompt(card, messages, cache=cache)
    assert len(cache) == 1
    compiled = cache.get(card.sources[0].text, card.strictness)
    assert render_prompt(card, messages, cache=cache) == first
    assert len(cache) == 1 and cache.get(card.sources[0].text, card.strictness) is compiled


def _handler(models: Path) -> RequestHandler:
    cards = {c.id: c for c in scan_models(models)}
    return RequestHandler(cards, SimEngine(SimSettings()), Strictness.STRICT)


def test_e4_templates_are_compiled_at_start_not_on_a_models_first_request() -> None:
    """The first request to each model must not pay the compile (tens of ms)."""
    handler = _handler(MODELS)
    assert handler.warm_templates() == len(handler._templates) >= 2
    warmed = dict(handler._templates._entries)
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}'
    tools = b', "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]'
    for model in handler.cards:
        handler.prepare("r1", body % model.encode(), completions=False)
        handler.prepare("r2", (body[:-1] + tools + b"}") % model.encode(), completions=False)
    assert handler._templates._entries == warmed, "a request compiled a template"
    assert all(handler._templates._entries[k] is v for k, v in warmed.items())


def test_e3_a_template_that_does_not_compile_is_skipped_at_start(tmp_path: Path) -> None:
    broken = tmp_path / "broken-1"
    shutil.copytree(MODELS / "hedgerow-sim-1", broken)
    (broken / "chat_template.jinja").write_text("{% if %}")
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "name_or_path": "broken-1"}))
    handler = _handler(tmp_path)
    assert [c.template_render_ok for c in handler.cards.values()] == [False]
    assert handler.warm_templates() == 0
    assert len(handler._templates) == 0
