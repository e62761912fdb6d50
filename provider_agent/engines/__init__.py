"""Engines turn a rendered request into OpenAI chunk JSON (BEHAVIOR E5)."""
