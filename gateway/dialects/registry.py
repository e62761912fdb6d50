"""The dialects the gateway serves, by endpoint."""

from __future__ import annotations

from gateway.dialects import anthropic, chat, completions, responses
from gateway.dialects.base import Dialect, FinalObjectAssembler


def responses_assembler(model: str) -> FinalObjectAssembler:
    stream = responses.ResponsesStream(model)
    return FinalObjectAssembler(stream, lambda usage: stream.response("completed", usage))


def messages_assembler(model: str) -> FinalObjectAssembler:
    stream = anthropic.MessagesStream(model)
    return FinalObjectAssembler(stream, lambda usage: stream.message(usage, final=True))


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
RESPONSES = Dialect(
    name="responses",
    anthropic_errors=False,
    lower=responses.lower,
    stream=lambda req: responses.ResponsesStream(req.model),
    assembler=lambda req: responses_assembler(req.model),
)
MESSAGES = Dialect(
    name="messages",
    anthropic_errors=True,
    lower=anthropic.lower,
    stream=lambda req: anthropic.MessagesStream(req.model),
    assembler=lambda req: messages_assembler(req.model),
)
