"""E4: a provider compiles each chat template once, not per request (an empty cache must
still be used and filled)."""

from __future__ import annotations

from pathlib import Path

from provider_agent.scan import TemplateCache, render_prompt, scan_models

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
