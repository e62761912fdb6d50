"""Render test: the incident class, reproduced with a Gemma-style template of our own.

Real engines (swift-jinja, llama.cpp's minja) raise when ``upper`` gets a non-string; stock
Jinja2 stringifies instead, so the environment registers a strict ``upper`` to behave like
them. The template walks parameters recursively, as Gemma's does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from contract.schema import normalize_body

GEMMA_STYLE_TEMPLATE = """\
{%- macro render_schema(schema) -%}
{type:{{ schema['type'] | upper }}
{%- if schema['nullable'] %},nullable:true{% endif %}
{%- if schema['enum'] is defined %},enum:{{ schema['enum'] | join('|') }}{% endif %}
{%- if schema['properties'] is mapping %},properties:{
{%- for name, prop in schema['properties'].items() -%}
{{ name }}:{{ render_schema(prop) }}{% if not loop.last %},{% endif %}
{%- endfor -%}
}
{%- endif %}
{%- if schema['items'] is mapping %},items:{{ render_schema(schema['items']) }}{% endif -%}
}
{%- endmacro -%}
{{ bos_token }}
{%- for message in messages %}
<start_of_turn>{{ message['role'] }}
{% if loop.first and tools %}
{% for tool in tools %}
<declaration:{{ tool['function']['name'] }}{{ render_schema(tool['function']['parameters']) }}>
{% endfor %}
{% endif %}
{{ message['content'] }}<end_of_turn>
{% endfor %}
"""


def strict_upper(value: object) -> str:
    """``upper`` as strict engines implement it: strings only."""
    if not isinstance(value, str):
        raise TypeError(f"upper filter requires a string, got {type(value).__name__}")
    return value.upper()


@pytest.fixture
def template() -> Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["upper"] = strict_upper
    return env.from_string(GEMMA_STYLE_TEMPLATE)


def render(template: Template, body: bytes) -> str:
    doc = json.loads(body)
    return template.render(bos_token="<bos>", messages=doc["messages"], tools=doc["tools"])


def body_with(parameters: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "model": "gemma",
            "messages": [{"role": "user", "content": "weather in SF?"}],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": parameters}}
            ],
        }
    ).encode()


INCIDENT_PARAMETERS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "city"},
        "unit": {"type": ["string", "null"], "description": "optional unit"},
    },
    "required": ["location"],
}


def test_d3_render_fully_typed_schema_is_left_as_is_and_renders(template: Template) -> None:
    body = body_with({"type": "object", "properties": {"q": {"type": "string"}}})
    assert normalize_body(body).body is body
    assert render(template, body) == (
        "<bos><start_of_turn>user\n"
        "<declaration:get_weather{type:OBJECT,properties:{q:{type:STRING}}}>\n"
        "weather in SF?<end_of_turn>\n"
    )


def test_d2_render_raw_nullable_schema_crashes_and_renders_after_repair(
    template: Template,
) -> None:
    raw = body_with(INCIDENT_PARAMETERS)
    with pytest.raises(TypeError, match="upper filter requires a string, got list"):
        render(template, raw)

    assert render(template, normalize_body(raw).body) == (
        "<bos><start_of_turn>user\n"
        "<declaration:get_weather{type:OBJECT,properties:{"
        "location:{type:STRING},unit:{type:STRING,nullable:true}}}>\n"
        "weather in SF?<end_of_turn>\n"
    )


def test_d2_render_typeless_enum_and_union_properties_crash_and_render_after_repair(
    template: Template,
) -> None:
    raw = body_with(
        {
            "properties": {
                "unit": {"enum": ["c", "f"]},
                "n": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            }
        }
    )
    with pytest.raises(TypeError, match="got Undefined"):
        render(template, raw)

    assert render(template, normalize_body(raw).body) == (
        "<bos><start_of_turn>user\n"
        "<declaration:get_weather{type:OBJECT,properties:{"
        "unit:{type:STRING,enum:c|f},n:{type:INTEGER,nullable:true}}}>\n"
        "weather in SF?<end_of_turn>\n"
    )


def test_d2_render_nested_objects_and_items_crash_and_render_after_repair(
    template: Template,
) -> None:
    raw = body_with(
        {
            "type": ["object", "null"],
            "properties": {
                "opts": {"properties": {"snooze": {"type": ["integer", "null"]}}},
                "tags": {"type": "array", "items": {"type": ["string", "null"]}},
            },
        }
    )
    with pytest.raises(TypeError):
        render(template, raw)

    assert render(template, normalize_body(raw).body) == (
        "<bos><start_of_turn>user\n"
        "<declaration:get_weather{type:OBJECT,nullable:true,properties:{"
        "opts:{type:OBJECT,properties:{snooze:{type:INTEGER,nullable:true}}},"
        "tags:{type:ARRAY,items:{type:STRING,nullable:true}}}}>\n"
        "weather in SF?<end_of_turn>\n"
    )
