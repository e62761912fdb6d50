"""The dialects the gateway serves, by endpoint."""

from __future__ import annotations

from gateway.dialects import chat, completions
from gateway.dialects.base import Dialect

CHAT = Dialect(
    name="chat",
    anthropic_errors=False,
    lower=chat.lower,
    stream=lambda req: chat.ChatStream(req.model, req.include_usage),
    assembler=lambda req: chat.ChatAssembler(req.model),
)
COMPLETIONS = Dialect(
    name="completions",
    anthropic_errors=False,
    lower=completions.lower,
    stream=lambda req: completions.CompletionsStream(req.model, req.include_usage),
    assembler=lambda req: completions.CompletionsAssembler(req.model),
)
