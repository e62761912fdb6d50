"""Rule E3 (render environment, fixtures, self-check) and the render half of E4."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from contract.schema import normalize_body, repair_tools
from provider_agent.templates import (
    STRICT_STRING_FILTERS,
    FixtureGroup,
    Strictness,
    TemplateCompileError,
    TemplateRaisedError,
    TemplateRenderError,
    canonical_fixtures,
    canonical_tool,
    compile_template,
    fold_system,
    render,
    self_check,
    template_messages,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
USER = [{"role": "user", "content": "hi"}]


def fixture_template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def render_source(source: str, strictness: Strictness = Strictness.STRICT, **kwargs: Any) -> str:
    messages = kwargs.pop("messages", USER)
    return render(compile_template(source, strictness), messages, **kwargs)


def raw_nullable_tool() -> dict[str, Any]:
    """A tool as a client sends it before repair: the type is a list (Pydantic Optional)."""
    return {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": ["string", "null"], "description": "city"}},
                "required": [],
            },
        },
    }


# --- environment ------------------------------------------------------------------------


def test_e3_trim_blocks_and_lstrip_blocks_are_on():
    source = "  {% if true %}\nA\n  {% endif %}\nB"
    assert render_source(source) == "A\nB"


def test_e3_sandbox_refuses_unsafe_attribute_access():
    with pytest.raises(TemplateRenderError, match="SecurityError"):
        render_source("{{ ''.__class__.__mro__[1].__subclasses__() }}")


def test_e3_sandbox_is_immutable():
    with pytest.raises(TemplateRenderError, match="SecurityError"):
        render_source("{% set items = [] %}{{ items.append(1) }}")


def test_e3_raise_exception_surfaces_the_template_message_exactly():
    with pytest.raises(TemplateRenderError) as caught:
        render_source("{{ raise_exception('Roles must alternate') }}")
    assert caught.value.message == "Roles must alternate"
    assert str(caught.value) == "Roles must alternate"
    assert caught.value.filter_name is None
    assert isinstance(caught.value.__cause__, TemplateRaisedError)
    assert isinstance(caught.value.__cause__, jinja2.TemplateError)


def test_e3_strftime_now_formats_the_injected_clock():
    template = compile_template(
        "{{ strftime_now('%d %b %Y') }}", now=lambda: datetime(2026, 3, 4, 5, 6, 7)
    )
    assert render(template, USER) == "04 Mar 2026"


def test_e3_tojson_does_not_html_escape_and_keeps_unicode():
    out = render_source(
        "{{ value | tojson }}", extra={"value": {"q": "<a href='x'>&</a>", "u": "é"}}
    )
    assert out == '{"q": "<a href=\'x\'>&</a>", "u": "é"}'


def test_e3_tojson_supports_indent_and_sort_keys():
    out = render_source(
        "{{ value | tojson(indent=2, sort_keys=true) }}", extra={"value": {"b": 1, "a": [2]}}
    )
    assert out == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}'


def test_e3_loop_controls_and_generation_tag_are_available():
    source = (
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    )
    out = render_source(
        source, messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    )
    assert out == "a"


def test_e3_environment_is_not_shared_between_compiles():
    strict = compile_template("{{ x | upper }}", Strictness.STRICT)
    lenient = compile_template("{{ x | upper }}", Strictness.LENIENT)
    assert strict.template.environment is not lenient.template.environment
    assert render(lenient, USER, extra={"x": 1}) == "1"
    with pytest.raises(TemplateRenderError):
        render(strict, USER, extra={"x": 1})


# --- strictness -------------------------------------------------------------------------


@pytest.mark.parametrize("name", STRICT_STRING_FILTERS)
@pytest.mark.parametrize("value", [["string", "null"], None, 3, {"a": 1}])
def test_e3_strict_string_filters_refuse_non_strings(name, value):
    with pytest.raises(TemplateRenderError) as caught:
        render_source(f"{{{{ v | {name} }}}}", extra={"v": value})
    assert caught.value.message == f"{name} filter requires string"
    assert caught.value.filter_name == name
    assert isinstance(caught.value.__cause__, TypeError)


@pytest.mark.parametrize("name", STRICT_STRING_FILTERS)
def test_e3_strict_string_filters_refuse_undefined_like_swift_jinja(name):
    with pytest.raises(TemplateRenderError, match=f"{name} filter requires string"):
        render_source(f"{{{{ schema['type'] | {name} }}}}", extra={"schema": {}})


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'aB c' | upper", "AB C"),
        ("'aB c' | lower", "ab c"),
        ("'aB c' | title", "Ab C"),
        ("'aB c' | capitalize", "Ab c"),
        ("'  x  ' | trim", "x"),
        ("'xxAxx' | trim('x')", "A"),
    ],
)
def test_e3_strict_string_filters_still_work_on_strings(expression, expected):
    assert render_source(f"{{{{ {expression} }}}}") == expected


def test_e3_lenient_upper_on_a_type_list_stringifies_like_jinja2():
    out = render_source("{{ ['string','null'] | upper }}", Strictness.LENIENT)
    assert out == "['STRING', 'NULL']"


def test_e3_strict_upper_on_a_type_list_raises_like_the_engines():
    with pytest.raises(TemplateRenderError) as caught:
        render_source("{{ ['string','null'] | upper }}", Strictness.STRICT)
    assert caught.value.message == "upper filter requires string"


def test_e3_gemma_style_template_on_unrepaired_nullable_type_strict_vs_lenient():
    source = fixture_template("gemma_style.jinja")
    tools = [raw_nullable_tool()]
    with pytest.raises(TemplateRenderError) as caught:
        render_source(source, Strictness.STRICT, tools=tools)
    assert caught.value.filter_name == "upper"
    out = render_source(source, Strictness.LENIENT, tools=tools)
    assert "<escape>['STRING', 'NULL']<escape>" in out


def test_e3_default_strictness_is_strict():
    with pytest.raises(TemplateRenderError):
        render(compile_template("{{ 1 | upper }}"), USER)
    assert self_check("{{ messages[0]['content'] | upper }}", is_vision=True).cap_vision is False


# --- compile and render -----------------------------------------------------------------


def test_e3_compile_error_names_the_line():
    with pytest.raises(TemplateCompileError) as caught:
        compile_template(fixture_template("broken_syntax.jinja"))
    assert caught.value.message.startswith("line ")
    assert "endfor" in caught.value.message


def test_e3_render_context_has_messages_tokens_and_generation_flag():
    source = "{{ bos_token }}|{{ messages | length }}|{{ add_generation_prompt }}|{{ eos_token }}"
    assert render_source(source, bos_token="<s>", eos_token="</s>") == "<s>|1|True|</s>"
    assert render_source(source, add_generation_prompt=False) == "|1|False|"


def test_e3_tools_key_is_absent_without_tools_and_present_with_them():
    source = "{{ tools is defined }}"
    assert render_source(source) == "False"
    assert render_source(source, tools=[canonical_tool()]) == "True"


def test_e3_extra_variables_are_visible_but_cannot_replace_the_request():
    source = "{{ enable_thinking }}|{{ messages[0]['content'] }}"
    out = render_source(source, extra={"enable_thinking": False, "messages": [{"content": "x"}]})
    assert out == "False|hi"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ none + 1 }}", "TypeError"),
        ("{% for x in none %}{% endfor %}", "TypeError"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
    ],
)
def test_e4_any_template_failure_is_a_render_error_with_its_message(source, fragment):
    with pytest.raises(TemplateRenderError, match=fragment):
        render_source(source)


# --- fixtures ---------------------------------------------------------------------------


def _schema_nodes(schema: dict[str, Any]):
    yield schema
    for child in schema.get("properties", {}).values():
        yield from _schema_nodes(child)
    if "items" in schema:
        yield from _schema_nodes(schema["items"])


def test_e3_tool_fixture_is_in_post_repair_shape():
    parameters = canonical_tool()["function"]["parameters"]
    nodes = list(_schema_nodes(parameters))
    assert all(isinstance(node["type"], str) for node in nodes)
    assert any("enum" in node for node in nodes)
    assert any(node["type"] == "array" and "items" in node for node in nodes)
    assert any(node is not parameters and node["type"] == "object" for node in nodes)
    assert any(node.get("nullable") is True and node["type"] == "string" for node in nodes)
    # The real-world shapes issue 6 repairs, as repaired: an integer enum, and an
    # Optional[Model] -- anyOf over a local $ref and null -- with its $defs.
    assert any(node["type"] == "integer" and node.get("enum") == [1, 2, 3] for node in nodes)
    window = parameters["properties"]["window"]
    assert window["anyOf"][0]["$ref"] == "#/$defs/TimeWindow"
    assert (window["type"], window["nullable"]) == ("object", True)
    assert parameters["$defs"]["TimeWindow"]["type"] == "object"


def test_e3_tool_fixture_is_a_fixed_point_of_the_repair_and_valid_json_schema():
    # What providers receive is what the repair produces: repairing it again changes nothing.
    tools = [canonical_tool()]
    assert repair_tools(tools) == 0
    assert tools == [canonical_tool()]
    body = json.dumps({"model": "m", "tools": [canonical_tool()]}).encode()
    assert normalize_body(body).body is body
    Draft202012Validator.check_schema(canonical_tool()["function"]["parameters"])


def test_e3_fixture_groups_and_names():
    names = {f.name: f.group for f in canonical_fixtures(is_vision=True)}
    assert names == {
        "chat": FixtureGroup.BASE,
        "empty_assistant_tail": FixtureGroup.BASE,
        "system_chat": FixtureGroup.SYSTEM,
        "tool_declaration": FixtureGroup.TOOLS,
        "tool_flow": FixtureGroup.TOOLS,
        "image_parts": FixtureGroup.VISION,
        "video_parts": FixtureGroup.VISION,
    }
    text_only = canonical_fixtures(is_vision=False)
    assert all(f.group is not FixtureGroup.VISION for f in text_only)


def test_e3_base_fixtures_are_user_assistant_user_and_empty_assistant_tail():
    by_name = {f.name: f for f in canonical_fixtures(is_vision=False)}
    assert [m["role"] for m in by_name["chat"].messages] == ["user", "assistant", "user"]
    tail = by_name["empty_assistant_tail"].messages
    assert tail[-1] == {"role": "assistant", "content": ""}
    assert [m["role"] for m in by_name["system_chat"].messages] == ["system", "user"]


def test_e3_tool_flow_has_dict_arguments_and_a_tool_reply():
    flow = next(f for f in canonical_fixtures(is_vision=False) if f.name == "tool_flow")
    assert flow.tools is not None and len(flow.tools) == 1
    assistant, reply = flow.messages[1], flow.messages[2]
    assert isinstance(assistant["tool_calls"][0]["function"]["arguments"], dict)
    assert reply["role"] == "tool"
    assert reply["tool_call_id"] == assistant["tool_calls"][0]["id"]


def test_e3_vision_fixtures_carry_image_and_video_parts():
    vision = [f for f in canonical_fixtures(is_vision=True) if f.group is FixtureGroup.VISION]
    part_types = {p["type"] for f in vision for p in f.messages[0]["content"]}
    assert part_types == {"text", "image_url", "video_url"}


def test_e3_fixtures_are_fresh_per_call():
    first, second = canonical_fixtures(is_vision=True), canonical_fixtures(is_vision=True)
    assert first == second
    assert first[0].messages[0] is not second[0].messages[0]


# --- self-check -------------------------------------------------------------------------


def test_e3_gemma_style_template_passes_every_group():
    report = self_check(fixture_template("gemma_style.jinja"), is_vision=True, bos_token="<bos>")
    assert report.compile_error is None
    assert [g.group for g in report.groups] == list(FixtureGroup)
    assert all(g.ok and g.fixture is None and g.error is None for g in report.groups)
    assert (report.template_render_ok, report.cap_system, report.cap_tools, report.cap_vision) == (
        True,
        True,
        True,
        True,
    )


def test_e3_text_model_report_has_no_vision_verdict():
    report = self_check(fixture_template("gemma_style.jinja"), is_vision=False)
    assert report.result(FixtureGroup.VISION) is None
    assert report.cap_vision is None
    assert report.template_render_ok and report.cap_tools


def test_e3_incident_class_breaks_only_tools_strict():
    report = self_check(fixture_template("incident_tool_args.jinja"), is_vision=False)
    assert report.template_render_ok is True
    assert report.cap_system is True
    assert report.cap_tools is False
    tools = report.result(FixtureGroup.TOOLS)
    assert tools is not None
    assert (tools.fixture, tools.filter_name, tools.error) == (
        "tool_flow",
        "trim",
        "trim filter requires string",
    )


def test_e3_incident_class_that_only_a_strict_engine_crashes_on_passes_lenient():
    report = self_check(
        fixture_template("incident_tool_args.jinja"), is_vision=False, strictness=Strictness.LENIENT
    )
    assert report.cap_tools is True


def test_e3_schema_walking_gemma_template_passes_every_group_strict():
    # Walks every schema position of the canonical tool and upper-cases every type.
    report = self_check(fixture_template("gemma_schema_walk.jinja"), is_vision=False)
    assert all(g.ok for g in report.groups), report.groups
    assert report.template_render_ok and report.cap_system and report.cap_tools


def test_e3_template_a_strict_engine_crashes_on_is_flagged_strict_and_passes_lenient():
    # Options of the canonical tool's integer enum reach `option | trim`: Jinja2 renders
    # "1", swift-jinja and llama.cpp throw. Only the strict check sees it.
    source = fixture_template("enum_option_trim.jinja")
    strict = self_check(source, is_vision=False)
    assert (strict.template_render_ok, strict.cap_system, strict.cap_tools) == (True, True, False)
    tools = strict.result(FixtureGroup.TOOLS)
    assert tools is not None
    assert (tools.fixture, tools.filter_name, tools.refused, tools.error) == (
        "tool_declaration",
        "trim",
        "int",
        "trim filter requires string",
    )
    lenient = self_check(source, is_vision=False, strictness=Strictness.LENIENT)
    assert all(g.ok for g in lenient.groups)
    out = render_source(source, Strictness.LENIENT, tools=[canonical_tool()])
    assert "enum:[<escape>1<escape>,<escape>2<escape>,<escape>3<escape>]" in out


@pytest.mark.parametrize(
    ("expression", "context", "refused"),
    [
        (
            "tools[0].function.parameters.properties.x.type | upper",
            {"type": ["string", "null"]},
            "list",
        ),
        ("tools[0].function.parameters.properties.x.type | upper", {}, "Undefined"),
        ("tools[0].function.parameters.properties.x.enum[0] | lower", {"enum": [7]}, "int"),
    ],
)
def test_e3_strict_filter_failure_names_the_filter_and_what_it_refused(
    expression, context, refused
):
    tool = {"function": {"name": "f", "parameters": {"properties": {"x": context}}}}
    source = f"{{{{ {expression} }}}}"
    with pytest.raises(TemplateRenderError) as caught:
        render_source(source, tools=[tool])
    assert caught.value.refused == refused
    assert caught.value.filter_name == expression.rsplit("| ", 1)[1]
    render_source(source, Strictness.LENIENT, tools=[tool])  # Jinja2 stringifies instead


@pytest.mark.parametrize("strictness", list(Strictness))
def test_e3_template_raising_on_tool_role_fails_tools_only(strictness):
    report = self_check(
        fixture_template("raises_on_tool_role.jinja"), is_vision=True, strictness=strictness
    )
    assert (report.template_render_ok, report.cap_system, report.cap_tools, report.cap_vision) == (
        True,
        True,
        False,
        True,
    )
    tools = report.result(FixtureGroup.TOOLS)
    assert tools is not None and tools.fixture == "tool_flow"
    assert tools.error == "Tool responses are not supported by this template"
    assert tools.filter_name is None


def test_e3_template_refusing_system_is_not_broken():
    report = self_check(fixture_template("no_system.jinja"), is_vision=False)
    assert report.template_render_ok is True
    assert report.cap_system is False
    system = report.result(FixtureGroup.SYSTEM)
    assert system is not None and system.fixture == "system_chat"
    assert system.error == "System role not supported"


def test_e3_fold_system_lets_a_system_refusing_template_render():
    template = compile_template(fixture_template("no_system.jinja"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    with pytest.raises(TemplateRenderError):
        render(template, messages)
    out = render(template, fold_system(messages))
    assert "<start_of_turn>user\nBe brief.\n\nHello<end_of_turn>" in out


def test_e3_template_that_does_not_compile_fails_everything():
    report = self_check(fixture_template("broken_syntax.jinja"), is_vision=True)
    assert report.compile_error is not None and report.compile_error.startswith("line ")
    assert report.groups == ()
    assert (report.template_render_ok, report.cap_system, report.cap_tools, report.cap_vision) == (
        False,
        False,
        False,
        False,
    )


def test_e3_base_failure_means_not_ok():
    source = "{% if messages | length > 1 %}{{ raise_exception('one message only') }}{% endif %}x"
    report = self_check(source, is_vision=False)
    assert report.template_render_ok is False
    base = report.result(FixtureGroup.BASE)
    assert base is not None and base.fixture == "chat" and base.error == "one message only"
    assert report.cap_system is False  # the system fixture has two messages too


def test_e3_a_group_reports_its_first_failing_fixture():
    source = "{% if tools %}{{ raise_exception('no tools') }}{% endif %}x"
    tools = self_check(source, is_vision=False).result(FixtureGroup.TOOLS)
    assert tools is not None and tools.fixture == "tool_declaration"


def test_e3_content_parts_are_judged_only_for_vision_models():
    source = "{% for m in messages %}{{ m['content'] | trim }}{% endfor %}"
    text_model = self_check(source, is_vision=False)
    assert text_model.template_render_ok is True and text_model.cap_vision is None
    vision_model = self_check(source, is_vision=True)
    assert vision_model.template_render_ok is True and vision_model.cap_vision is False
    vision = vision_model.result(FixtureGroup.VISION)
    assert vision is not None and vision.fixture == "image_parts" and vision.filter_name == "trim"


def test_e3_special_tokens_reach_the_fixtures():
    source = "{% if bos_token != '<s>' %}{{ raise_exception('bos missing') }}{% endif %}ok"
    assert self_check(source, is_vision=False, bos_token="<s>").template_render_ok is True
    assert self_check(source, is_vision=False).template_render_ok is False
    eos_source = "{% if eos_token != '</s>' %}{{ raise_exception('eos missing') }}{% endif %}"
    assert self_check(eos_source, is_vision=False, eos_token="</s>").template_render_ok is True


def test_e3_self_check_never_raises_on_hostile_templates():
    for source in [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{% %}",
    ]:
        report = self_check(source, is_vision=True)
        assert report.template_render_ok is False


# --- message shaping --------------------------------------------------------------------


def test_e3_fold_system_prepends_system_text_to_first_user_message():
    messages = [
        {"role": "system", "content": "Rule one."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Again"},
    ]
    before = copy.deepcopy(messages)
    assert fold_system(messages) == [
        {"role": "user", "content": "Rule one.\n\nHi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Again"},
    ]
    assert messages == before


def test_e3_fold_system_joins_several_system_messages_and_text_parts():
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "A"},
        {
            "role": "system",
            "content": [{"type": "text", "text": "B"}, {"type": "text", "text": "C"}],
        },
        {"role": "user", "content": "Q"},
    ]
    assert fold_system(messages) == [{"role": "user", "content": "A\n\nB\nC\n\nQ"}]


def test_e3_fold_system_into_content_parts_adds_a_leading_text_part():
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [image]},
    ]
    assert fold_system(messages) == [
        {"role": "user", "content": [{"type": "text", "text": "S"}, image]}
    ]


def test_e3_fold_system_without_user_message_makes_one():
    messages = [{"role": "assistant", "content": "x"}, {"role": "system", "content": "S"}]
    assert fold_system(messages) == [
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "S"},
    ]


def test_e3_fold_system_with_empty_user_content_uses_system_text_alone():
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": ""}]
    assert fold_system(messages) == [{"role": "user", "content": "S"}]


def test_e3_fold_system_drops_empty_system_and_leaves_others_alone():
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": "Q"}]
    assert fold_system(messages) == [{"role": "user", "content": "Q"}]
    assert fold_system(USER) == USER


roles = st.sampled_from(["system", "user", "assistant", "tool"])
contents = st.one_of(st.text(max_size=5), st.none())


@given(st.lists(st.fixed_dictionaries({"role": roles, "content": contents}), max_size=8))
def test_e3_fold_system_removes_every_system_turn_and_keeps_the_others_in_order(messages):
    folded = fold_system(messages)
    assert all(m["role"] != "system" for m in folded)
    kept = [m["role"] for m in messages if m["role"] != "system"]
    produced = [m["role"] for m in folded]
    has_text = any(m["role"] == "system" and m["content"] for m in messages)
    if has_text and "user" not in kept:
        produced.remove("user")  # the one inserted to carry the system text
    assert produced == kept


def test_e4_template_messages_decodes_json_arguments_and_nulls():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    messages = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    before = copy.deepcopy(messages)
    shaped = template_messages(messages)
    assert shaped == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{**call, "function": {"name": "f", "arguments": {"a": 1}}}],
        }
    ]
    assert messages == before


@pytest.mark.parametrize("arguments", ["not json", "[1, 2]", "3", {"already": "dict"}])
def test_e4_template_messages_keeps_arguments_that_are_not_a_json_object_string(arguments):
    call = {"function": {"name": "f", "arguments": arguments}}
    shaped = template_messages([{"role": "assistant", "content": "", "tool_calls": [call]}])
    assert shaped[0]["tool_calls"][0]["function"]["arguments"] == arguments


def test_e4_template_messages_leaves_plain_messages_equal():
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "x"}]},
        {"role": "tool"},
    ]
    assert template_messages(messages) == messages
