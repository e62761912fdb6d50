"""Chat-template rendering and the render self-check (rules E3, E4).

A chat template is third-party code shipped with a model snapshot. The provider must know
*before* it serves traffic which request shapes the template can render, because a template
that throws turns into a 500 at request time. This module renders templates the way the
engines providers run do, and checks them against canonical fixtures grouped by what they
prove:

- ``base``: a user/assistant/user chat and an empty assistant tail. Failing here (or failing
  to compile) means the template is broken for every shape: ``template_render_ok`` false.
- ``system``: a system + user chat. Refusing it is legitimate (Gemma 2 raises on system);
  the agent then folds system text into the first user turn (``fold_system``).
- ``tools``: a tool declaration in post-repair shape and a full tool flow. Failing here
  fences tools requests only (the incident class).
- ``vision`` (vision models only): image and video content parts.

Everything here is pure: no I/O, no global state. The only clock read is ``strftime_now``,
and the clock is injectable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = Mapping[str, Any]
"""One chat message as the template sees it (OpenAI chat shape)."""

Clock = Callable[[], datetime]

# String filters that swift-jinja and llama.cpp's template engine refuse on non-strings,
# while Python's Jinja2 silently stringifies (``['string','null'] | upper`` -> "['STRING', ...").
STRICT_STRING_FILTERS: tuple[str, ...] = ("upper", "lower", "title", "capitalize", "trim")


class Strictness(StrEnum):
    """Which engine's filter semantics a render follows."""

    STRICT = "strict"
    """String filters demand a string (swift-jinja, llama.cpp): the default for the check."""
    LENIENT = "lenient"
    """Plain Jinja2, as transformers (and so vLLM, SGLang) uses it."""


class FixtureGroup(StrEnum):
    """What a group of fixtures proves about a template (E3)."""

    BASE = "base"
    SYSTEM = "system"
    TOOLS = "tools"
    VISION = "vision"


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class ChatTemplateError(Exception):
    """Base of this module's errors; ``message`` is the human-readable cause."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class TemplateCompileError(ChatTemplateError):
    """The template source does not compile (syntax error or unusable source)."""


class TemplateRenderError(ChatTemplateError):
    """Rendering raised. ``message`` is the template's own message (``raise_exception``
    text, or the failing filter's error); ``filter_name`` names the strict string filter
    that refused a non-string, when that is the cause, and ``refused`` the kind of value it
    got (``list``, ``int``, ``Undefined`` for a missing key...)."""

    def __init__(
        self, message: str, *, filter_name: str | None = None, refused: str | None = None
    ) -> None:
        super().__init__(message)
        self.filter_name = filter_name
        self.refused = refused


class TemplateRaisedError(jinja2.TemplateError):
    """Raised by the template itself through the ``raise_exception`` global."""


class StrictFilterError(jinja2.TemplateRuntimeError, TypeError):
    """A strict string filter got a non-string, e.g. "upper filter requires string" (the
    engines' own wording); ``refused`` is the type name of the value it got."""

    def __init__(self, filter_name: str, refused: str) -> None:
        super().__init__(f"{filter_name} filter requires string")
        self.filter_name = filter_name
        self.refused = refused


# ---------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------


class _GenerationTag(Extension):
    """Accepts transformers' ``{% generation %}...{% endgeneration %}`` and renders the
    body unchanged, so templates that mark assistant spans for training still compile
    (transformers registers a tag of that name; without it they would be flagged broken)."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja2's own tojson HTML-escapes <, >, & and ' -- templates would put \u003c into
    # prompts. transformers replaces it with plain json.dumps; so do we.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise TemplateRaisedError(message)


def _strict_string_filter(name: str, plain: Callable[..., str]) -> Callable[..., str]:
    def apply(value: object, *args: Any) -> str:
        # Undefined is refused too: swift-jinja throws on ``value['type'] | upper`` when the
        # key is missing, which is how untyped schema nodes crashed providers.
        if not isinstance(value, str):
            raise StrictFilterError(name, _kind(value))
        return plain(value, *args)

    return apply


def _kind(value: object) -> str:
    """How a refused value is named in reports: its type, ``Undefined`` for a missing key."""
    if isinstance(value, jinja2.Undefined):
        return "Undefined"
    return type(value).__name__


def make_environment(
    strictness: Strictness, *, now: Clock = datetime.now
) -> ImmutableSandboxedEnvironment:
    """A fresh render environment per E3: immutable sandbox, ``trim_blocks`` and
    ``lstrip_blocks``, loop controls, the ``generation`` tag, globals ``raise_exception``
    and ``strftime_now`` (formatted from ``now()``), a non-escaping ``tojson``, and strict
    string filters when ``strictness`` is STRICT. Never shared between callers."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationTag],
    )
    env.filters["tojson"] = _tojson
    if strictness is Strictness.STRICT:
        for name in STRICT_STRING_FILTERS:
            env.filters[name] = _strict_string_filter(name, env.filters[name])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: now().strftime(fmt)
    return env


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled template, bound to the strictness it was compiled for."""

    source: str
    strictness: Strictness
    template: jinja2.Template


def compile_template(
    source: str, strictness: Strictness = Strictness.STRICT, *, now: Clock = datetime.now
) -> ChatTemplate:
    """Compile ``source`` in a fresh environment (see ``make_environment``).

    Raises TemplateCompileError with the parser's message when it does not compile."""
    env = make_environment(strictness, now=now)
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateCompileError(f"line {exc.lineno}: {exc.message}") from exc
    # Untrusted source text: any other failure of the compiler (e.g. RecursionError on
    # absurd nesting) also means the template cannot be used.
    except Exception as exc:
        raise TemplateCompileError(_describe(exc)) from exc
    return ChatTemplate(source=source, strictness=strictness, template=template)


def render(
    template: ChatTemplate,
    messages: Sequence[Message],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Render ``messages`` (and ``tools``) to a prompt string.

    Context: ``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``, the
    ``extra`` variables (which cannot override those), and ``tools`` only when given --
    absent rather than None, so ``tools is defined`` checks behave as on swift-jinja.
    Raises TemplateRenderError carrying the template's message on any failure."""
    context: dict[str, Any] = dict(extra or {})
    context.update(
        messages=list(messages),
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    if tools is not None:
        context["tools"] = list(tools)
    try:
        return template.template.render(context)
    except StrictFilterError as exc:
        raise TemplateRenderError(
            str(exc), filter_name=exc.filter_name, refused=exc.refused
        ) from exc
    except TemplateRaisedError as exc:
        raise TemplateRenderError(str(exc)) from exc
    # The template is third-party code: whatever it raises (TypeError on None, sandbox
    # SecurityError, RecursionError from a self-recursive macro...) is a render failure
    # with that message, never a crash of the caller.
    except Exception as exc:
        raise TemplateRenderError(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------
# Message shaping
# ---------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts)
    return ""


def fold_system(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Messages without ``system`` turns: their text (joined by a blank line, in order) is
    prepended to the first user message -- as a leading text part when that message's
    content is a list of parts. With no user message, the text becomes a user message at
    the first system message's place. Messages without a system turn come back equal.
    The input is not modified."""
    system_texts = [_text_of(m.get("content")) for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system_texts:
        return rest
    folded = "\n\n".join(t for t in system_texts if t)
    if not folded:
        return rest  # only empty system turns: nothing to carry over
    for message in rest:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = [{"type": "text", "text": folded}, *content]
        else:
            text = _text_of(content)
            message["content"] = f"{folded}\n\n{text}" if text else folded
        return rest
    first = next(i for i, m in enumerate(messages) if m.get("role") == "system")
    rest.insert(first, {"role": "user", "content": folded})
    return rest


def template_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Shape canonical OpenAI chat messages the way the self-check fixtures are shaped,
    which is what engines hand templates: tool-call ``arguments`` given as a JSON-object
    string become a dict (templates iterate them), and ``content: null`` becomes ``""``
    (templates apply string filters to content). Other values pass through unchanged;
    the input is not modified."""
    shaped: list[dict[str, Any]] = []
    for message in messages:
        out = dict(message)
        if "content" in out and out["content"] is None:
            out["content"] = ""
        calls = out.get("tool_calls")
        if isinstance(calls, list):
            out["tool_calls"] = [_decoded_call(call) for call in calls]
        shaped.append(out)
    return shaped


def _decoded_call(call: Any) -> Any:
    if not isinstance(call, Mapping):
        return call
    function = call.get("function")
    if not isinstance(function, Mapping) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"])
    except ValueError:
        return call  # not JSON: the template gets the string as sent
    if not isinstance(arguments, dict):
        return call
    return {**call, "function": {**function, "arguments": arguments}}


# ---------------------------------------------------------------------------------------
# Canonical fixtures
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    """One canonical request shape: messages as the template sees them, tools if any."""

    name: str
    group: FixtureGroup
    messages: tuple[Mapping[str, Any], ...]
    tools: tuple[Mapping[str, Any], ...] | None = None


def canonical_tool() -> dict[str, Any]:
    """The tool in post-repair shape -- what providers receive, a fixed point of
    ``contract.schema`` (every schema node has a string ``type``; nullability is
    ``nullable: true``): an enum, array items, a nested object with its own required
    list, a nullable property, and the real-world shapes Pydantic and OpenAI's strict
    helper send, as repaired: an integer enum (an ``IntEnum`` field, inlined), and an
    ``Optional[Model]`` -- an anyOf over a local ``$ref`` and null, with its ``$defs``."""
    return {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather and a short forecast for a location.",
            "parameters": {
                "$defs": {
                    "TimeWindow": {
                        "type": "object",
                        "title": "TimeWindow",
                        "properties": {
                            "start": {"type": "string", "format": "date-time"},
                            "hours": {"type": "integer", "minimum": 1, "maximum": 240},
                        },
                        "required": ["start"],
                    }
                },
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "City and country"},
                    "unit": {
                        "type": "string",
                        "enum": ["celsius", "fahrenheit"],
                        "description": "Temperature unit",
                    },
                    "days": {
                        "type": "array",
                        "items": {"type": "integer"},
                        "description": "Forecast days to include",
                    },
                    "options": {
                        "type": "object",
                        "description": "Lookup options",
                        "properties": {
                            "verbose": {"type": "boolean", "description": "Extended fields"},
                            "station": {
                                "type": "string",
                                "nullable": True,
                                "description": "Preferred station, if any",
                            },
                        },
                        "required": ["verbose"],
                    },
                    "priority": {
                        "type": "integer",
                        "enum": [1, 2, 3],
                        "default": 1,
                        "description": "Alert priority, 1 = low",
                    },
                    "window": {
                        "anyOf": [
                            {"$ref": "#/$defs/TimeWindow", "type": "object"},
                            {"type": "null"},
                        ],
                        "description": "Time window, if any",
                        "type": "object",
                        "nullable": True,
                    },
                },
                "required": ["location", "unit"],
            },
        },
    }


def canonical_fixtures(*, is_vision: bool) -> tuple[Fixture, ...]:
    """The fixtures of E3, freshly built on every call (nothing shared between checks).
    Vision fixtures are included only for vision models: text-only models never receive
    content parts, so judging them on parts would flag healthy templates."""
    user = {"role": "user", "content": "Write one sentence about the sea."}
    fixtures = [
        Fixture(
            "chat",
            FixtureGroup.BASE,
            (
                user,
                {"role": "assistant", "content": "The sea is wide and restless."},
                {"role": "user", "content": "Another one, shorter."},
            ),
        ),
        Fixture(
            "empty_assistant_tail",
            FixtureGroup.BASE,
            (
                {"role": "user", "content": "Continue from here."},
                {"role": "assistant", "content": ""},
            ),
        ),
        Fixture(
            "system_chat",
            FixtureGroup.SYSTEM,
            ({"role": "system", "content": "You are a concise assistant."}, user),
        ),
        Fixture(
            "tool_declaration",
            FixtureGroup.TOOLS,
            ({"role": "user", "content": "What is the weather in Lisbon?"},),
            (canonical_tool(),),
        ),
        Fixture(
            "tool_flow",
            FixtureGroup.TOOLS,
            (
                {"role": "user", "content": "What is the weather in Lisbon?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_0001",
                            "type": "function",
                            "function": {
                                "name": "get_weather",
                                "arguments": {
                                    "location": "Lisbon, Portugal",
                                    "unit": "celsius",
                                    "days": [1, 2],
                                },
                            },
                        }
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "call_0001",
                    "name": "get_weather",
                    "content": '{"temperature": 21, "condition": "sunny"}',
                },
            ),
            (canonical_tool(),),
        ),
    ]
    if is_vision:
        fixtures += [
            Fixture(
                "image_parts",
                FixtureGroup.VISION,
                (
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Describe this image."},
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AA=="},
                            },
                        ],
                    },
                ),
            ),
            Fixture(
                "video_parts",
                FixtureGroup.VISION,
                (
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Describe this video."},
                            {
                                "type": "video_url",
                                "video_url": {"url": "https://example.com/v.mp4"},
                            },
                        ],
                    },
                ),
            ),
        ]
    return tuple(fixtures)


# ---------------------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupResult:
    """Outcome of one fixture group. On failure: the first failing fixture, the error
    message, and the strict filter that refused and what it got (if that was the cause)."""

    group: FixtureGroup
    ok: bool
    fixture: str | None = None
    error: str | None = None
    filter_name: str | None = None
    refused: str | None = None


@dataclass(frozen=True)
class CheckReport:
    """The self-check of one template source.

    ``groups`` holds base, system, tools and (vision models only) vision, in that order;
    it is empty when the source does not compile (``compile_error`` set). The verdicts
    are derived: a template that does not compile fails every capability."""

    is_vision: bool
    compile_error: str | None
    groups: tuple[GroupResult, ...]

    def result(self, group: FixtureGroup) -> GroupResult | None:
        """The group's result, or None when it was not run."""
        return next((g for g in self.groups if g.group is group), None)

    def _ok(self, group: FixtureGroup) -> bool:
        found = self.result(group)
        return self.compile_error is None and found is not None and found.ok

    @property
    def template_render_ok(self) -> bool:
        """Compiles and renders every base fixture."""
        return self._ok(FixtureGroup.BASE)

    @property
    def cap_system(self) -> bool:
        """Renders a system message (false: the agent folds system text)."""
        return self._ok(FixtureGroup.SYSTEM)

    @property
    def cap_tools(self) -> bool:
        """Renders the tool declaration and the tool flow."""
        return self._ok(FixtureGroup.TOOLS)

    @property
    def cap_vision(self) -> bool | None:
        """Renders image and video parts; None when the model is not a vision model."""
        return self._ok(FixtureGroup.VISION) if self.is_vision else None


def self_check(
    source: str,
    *,
    is_vision: bool,
    bos_token: str = "",
    eos_token: str = "",
    strictness: Strictness = Strictness.STRICT,
    now: Clock = datetime.now,
) -> CheckReport:
    """Compile ``source`` once and render every canonical fixture with
    ``add_generation_prompt`` true and the given special tokens. Each group stops at its
    first failing fixture. Never raises for anything the template does."""
    try:
        template = compile_template(source, strictness, now=now)
    except TemplateCompileError as exc:
        return CheckReport(is_vision=is_vision, compile_error=exc.message, groups=())
    fixtures = canonical_fixtures(is_vision=is_vision)
    results: list[GroupResult] = []
    for group in FixtureGroup:
        members = [f for f in fixtures if f.group is group]
        if members:
            results.append(_check_group(template, group, members, bos_token, eos_token))
    return CheckReport(is_vision=is_vision, compile_error=None, groups=tuple(results))


def _check_group(
    template: ChatTemplate,
    group: FixtureGroup,
    fixtures: Sequence[Fixture],
    bos_token: str,
    eos_token: str,
) -> GroupResult:
    for fixture in fixtures:
        try:
            render(
                template,
                fixture.messages,
                tools=fixture.tools,
                bos_token=bos_token,
                eos_token=eos_token,
            )
        except TemplateRenderError as exc:
            return GroupResult(
                group,
                ok=False,
                fixture=fixture.name,
                error=exc.message,
                filter_name=exc.filter_name,
                refused=exc.refused,
            )
    return GroupResult(group, ok=True)
