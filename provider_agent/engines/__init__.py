"""Engines turn a rendered request into OpenAI chunk JSON (rule E5)."""
