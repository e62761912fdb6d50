"""The dialects the gateway serves, by endpoint."""

from __future__ import annotations

from gateway.dialects import anthropic, chat, completions, responses
from gateway.dialects.base import Dialect, FinalObjectAssembler
from gateway.errors import anthropic_error_body, openai_error_body


def responses_assembler(model: str) -> FinalObjectAssembler:
    stream = responses.ResponsesStream(model)
    return FinalObjectAssembler(stream, lambda usage: stream.response("completed", usage))


def messages_assembler(model: str) -> FinalObjectAssembler:
    stream = anthropic.MessagesStream(model)
    return FinalObjectAssembler(stream, lambda usage: stream.message(usage, final=True))


CHAT = Dialect(
    name="chat",
    error_body=openai_error_body,
    lower=chat.lower,
    stream=lambda req: chat.ChatStream(req.model, req.include_usage),
    assembler=lambda req: chat.ChatAssembler(req.model),
)
COMPLETIONS = Dialect(
    name="completions",
    error_body=openai_error_body,
    lower=completions.lower,
    stream=lambda req: completions.CompletionsStream(req.model, req.include_usage),
    assembler=lambda req: completions.CompletionsAssembler(req.model),
)
RESPONSES = Dialect(
    name="responses",
    error_body=openai_error_body,
    lower=responses.lower,
    stream=lambda req: responses.ResponsesStream(req.model),
    assembler=lambda req: responses_assembler(req.model),
)
MESSAGES = Dialect(
    name="messages",
    error_body=anthropic_error_body,
    lower=anthropic.lower,
    stream=lambda req: anthropic.MessagesStream(req.model),
    assembler=lambda req: messages_assembler(req.model),
)
