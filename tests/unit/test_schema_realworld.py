"""Real-world tool schemas (issue 6, rules D4-D10): what Pydantic and OpenAI's
``pydantic_function_tool`` really generate, repaired by contract.schema.

For every generated schema: the raw one crashes a strict Gemma-style template wherever a
node is typeless (Optional, $ref, Any...), the repaired one renders through it in STRICT
mode (swift-jinja / llama.cpp semantics), is still valid JSON Schema (Draft 2020-12),
keeps every constraint of the original with the same value (the repair only adds or
collapses ``type``/``nullable`` and records replaced boolean/empty schemas), is a fixed
point of the repair, and still accepts the instances the model itself produces.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, Literal, Optional, Union

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import (  # type: ignore[import-untyped]  # no stubs; not a dependency to add
    Draft202012Validator,
    ValidationError,
    validators,
)
from pydantic import BaseModel, Field, create_model

from contract.schema import SCHEMA_RECORD_KEY, normalize_body, repair_tools
from provider_agent.templates import (
    ChatTemplate,
    Strictness,
    TemplateRenderError,
    compile_template,
    render,
)

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
WALK_SOURCE = (TEMPLATES / "gemma_schema_walk.jinja").read_text(encoding="utf-8")
STANDARD_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
MAP_POSITIONS = ("properties", "patternProperties", "$defs", "definitions")
LIST_POSITIONS = ("prefixItems", "anyOf", "oneOf", "allOf")
REPAIR_KEYS = {"type", "nullable", SCHEMA_RECORD_KEY}
USER = ({"role": "user", "content": "Please do it."},)

# --- the models, as agent frameworks declare tools ------------------------------------------


class Priority(IntEnum):
    LOW = 1
    NORMAL = 2
    HIGH = 3


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str = Field(min_length=1, max_length=120)
    zip: Optional[str] = Field(default=None, pattern=r"^\d{5}$")  # noqa: UP045 - as users write it


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(default=9, ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool = True


class Node(BaseModel):
    """A recursive model: a tree of named nodes."""

    name: str
    children: list[Node] = []


class CreateTask(BaseModel):
    """Create a task: Optional fields, enums, Literal, bounds and defaults."""

    title: str = Field(min_length=1, max_length=80, description="Short title")
    priority: Priority = Priority.NORMAL
    color: Optional[Color] = None  # noqa: UP045
    status: Literal["open", "done"] = "open"
    source: Literal["api"] = "api"
    due: Optional[datetime] = None  # noqa: UP045
    estimate_hours: float | None = Field(default=None, ge=0, le=1000)
    tags: list[str] = Field(default_factory=list, max_length=10)


class SendMail(BaseModel):
    """Send mail: nested models, lists and dicts of models."""

    to: list[Address] = Field(min_length=1)
    reply_to: Optional[Address] = None  # noqa: UP045
    home: Address = Field(description="Sender address")
    by_name: dict[str, Address] = {}
    counts: dict[str, int] = {}
    headers: dict[str, str] | None = None


class AdoptPet(BaseModel):
    """Adopt a pet: discriminated, plain and optional unions."""

    pet: Union[Cat, Dog] = Field(discriminator="kind")  # noqa: UP007
    backup: Optional[Union[Cat, Dog]] = None  # noqa: UP007, UP045
    code: int | str | None = None
    label: Literal["a", 1] = "a"


class PlotTree(BaseModel):
    """Plot a tree: recursive model, tuples, sets, Any."""

    tree: Node
    subtree: Node | None = None
    size: tuple[int, int] = (640, 480)
    seen: set[str] = set()
    payload: Any = None
    extra: Optional[Any] = None  # noqa: UP045
    ratio: float = Field(default=0.5, gt=0, lt=1, multiple_of=0.25)
    flags: list[bool] = [True]


TOOL_MODELS: tuple[type[BaseModel], ...] = (CreateTask, SendMail, AdoptPet, PlotTree, Node)

# Instances the models produce, dumped as a client would send arguments. Multi-type unions
# take their first member's type (D2) and Any fields a placeholder string (D9), so values
# of those fields are chosen within what the repaired type states.
INSTANCES: dict[str, list[BaseModel]] = {
    "CreateTask": [
        CreateTask(title="Buy milk"),
        CreateTask(
            title="Ship",
            priority=Priority.HIGH,
            color=Color.RED,
            status="done",
            due=datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
            estimate_hours=1.5,
            tags=["a", "b"],
        ),
    ],
    "SendMail": [
        SendMail(to=[Address(street="Main 1")], home=Address(street="Elm 2", zip="12345")),
        SendMail(
            to=[Address(street="a"), Address(street="b", zip="54321")],
            reply_to=Address(street="c"),
            home=Address(street="d"),
            by_name={"x": Address(street="e")},
            counts={"x": 1},
            headers={"k": "v"},
        ),
    ],
    "AdoptPet": [
        AdoptPet(pet=Cat(kind="cat")),
        AdoptPet(pet=Dog(kind="dog", good=False), backup=Cat(kind="cat", lives=3), code=7),
    ],
    "PlotTree": [
        PlotTree(tree=Node(name="root"), payload="text"),
        PlotTree(
            tree=Node(name="r", children=[Node(name="c", children=[Node(name="d")])]),
            subtree=Node(name="s"),
            size=(1, 2),
            seen={"q"},
            payload="any text",
            extra="more",
            ratio=0.75,
            flags=[False, True],
        ),
    ],
    "Node": [Node(name="leaf"), Node(name="r", children=[Node(name="c")])],
}


def pydantic_tool(model: type[BaseModel]) -> dict[str, Any]:
    """A chat tool entry whose parameters are Pydantic's own JSON Schema for ``model``."""
    return {
        "type": "function",
        "function": {
            "name": model.__name__,
            "description": (model.__doc__ or "").strip(),
            "parameters": model.model_json_schema(),
        },
    }


CASES: dict[str, dict[str, Any]] = {
    **{f"pydantic-{m.__name__}": pydantic_tool(m) for m in TOOL_MODELS},
    **{
        f"openai-{m.__name__}": dict(openai.pydantic_function_tool(m))  # type: ignore[arg-type]
        for m in TOOL_MODELS
    },
}


# --- helpers ---------------------------------------------------------------------------------


def chat_body(tools: list[dict[str, Any]]) -> bytes:
    return json.dumps({"model": "gemma", "messages": list(USER), "tools": tools}).encode()


def repaired_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """The tool after normalize_body, as providers receive it."""
    result = normalize_body(chat_body([tool]))
    tools = json.loads(result.body)["tools"]
    assert isinstance(tools, list)
    repaired = tools[0]
    assert isinstance(repaired, dict)
    return repaired


def params(tool: dict[str, Any]) -> dict[str, Any]:
    parameters = tool["function"]["parameters"]
    assert isinstance(parameters, dict)
    return parameters


@pytest.fixture(scope="module")
def strict_template() -> ChatTemplate:
    return compile_template(WALK_SOURCE, Strictness.STRICT)


def render_tool(template: ChatTemplate, tool: dict[str, Any]) -> str:
    return render(template, USER, tools=[tool], bos_token="<bos>")


def positions(node: dict[str, Any]) -> Iterator[Any]:
    """Every value at a sub-schema position of ``node`` (D4), booleans included."""
    for key in MAP_POSITIONS:
        if isinstance(node.get(key), dict):
            yield from node[key].values()
    items = node.get("items")
    if isinstance(items, list):
        yield from items
    elif items is not None:
        yield items
    if isinstance(node.get("additionalProperties"), dict):
        yield node["additionalProperties"]
    for key in LIST_POSITIONS:
        if isinstance(node.get(key), list):
            yield from node[key]


def schema_nodes(root: dict[str, Any]) -> Iterator[Any]:
    """The home and every value at a schema position below it."""
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, dict):
            stack.extend(positions(node))


def has_typeless_node(root: dict[str, Any]) -> bool:
    return any(
        not (isinstance(n, dict) and isinstance(n.get("type"), str)) for n in schema_nodes(root)
    )


KEPT: set[str] = set()
"""Every keyword assert_kept saw compared with the same value (coverage of the corpus)."""


def assert_kept(before: Any, after: Any, where: str = "#") -> None:
    """Every keyword of the original is in the repaired schema with the same value:
    positions are compared member by member (the members may only gain repairs), a declared
    string ``type`` and an existing ``nullable`` are unchanged, a boolean schema became its
    typed stand-in, and the repaired node adds nothing but type/nullable/the D6 record."""
    if isinstance(before, bool):
        assert after == {"type": "string", SCHEMA_RECORD_KEY: before}, where
        return
    assert isinstance(before, dict) and isinstance(after, dict), where
    assert set(after) - set(before) <= REPAIR_KEYS, where
    if SCHEMA_RECORD_KEY in after and SCHEMA_RECORD_KEY not in before:
        assert before == {} and after[SCHEMA_RECORD_KEY] is True, where
    for key, value in before.items():
        assert key in after, f"{where}: {key} lost"
        here = f"{where}/{key}"
        if key in MAP_POSITIONS and isinstance(value, dict):
            assert list(after[key]) == list(value), here
            for name, child in value.items():
                assert_kept(child, after[key][name], f"{here}/{name}")
        elif key in (*LIST_POSITIONS, "items") and isinstance(value, list):
            assert len(after[key]) == len(value), here
            for index, child in enumerate(value):
                assert_kept(child, after[key][index], f"{here}/{index}")
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            assert_kept(value, after[key], here)
        elif key == "type" and not isinstance(value, str):
            assert isinstance(after[key], str), here  # collapsed (D2)
        else:
            assert after[key] == value, f"{here}: {after[key]!r} != {value!r}"
        KEPT.add(key)


def _type_as_providers_read_it(
    validator: Any, types: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """``type`` with the two conventions the repair writes: ``nullable: true`` admits null
    (OpenAPI), and a D6 stand-in means the boolean schema it records."""
    record = schema.get(SCHEMA_RECORD_KEY)
    if record is True or (instance is None and schema.get("nullable") is True):
        return
    if record is False:
        yield ValidationError("the false schema admits nothing")
        return
    yield from Draft202012Validator.VALIDATORS["type"](validator, types, instance, schema)


ProviderValidator = validators.extend(Draft202012Validator, {"type": _type_as_providers_read_it})


# --- every generated schema ------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_d4_generated_schema_renders_strict_only_after_repair(
    case: str, strict_template: ChatTemplate
) -> None:
    raw = CASES[case]
    repaired = repaired_tool(raw)
    if has_typeless_node(params(raw)):
        with pytest.raises(TemplateRenderError) as caught:
            render_tool(strict_template, raw)
        assert caught.value.filter_name == "upper"
    prompt = render_tool(strict_template, repaired)
    assert f"declaration:{raw['function']['name']}{{parameters:{{type:<escape>OBJECT" in prompt
    assert "['" not in prompt  # nothing was stringified


def test_d8_raw_optional_schema_crashes_strict_and_renders_after_repair(
    strict_template: ChatTemplate,
) -> None:
    raw = CASES["pydantic-CreateTask"]
    color = params(raw)["properties"]["color"]
    assert color == {"anyOf": [{"$ref": "#/$defs/Color"}, {"type": "null"}], "default": None}
    with pytest.raises(TemplateRenderError) as caught:
        render_tool(strict_template, raw)
    assert (caught.value.message, caught.value.filter_name) == (
        "upper filter requires string",
        "upper",
    )
    repaired = repaired_tool(raw)
    assert params(repaired)["properties"]["color"] == {
        "anyOf": [{"$ref": "#/$defs/Color", "type": "string"}, {"type": "null"}],
        "default": None,
        "type": "string",
        "nullable": True,
    }
    prompt = render_tool(strict_template, repaired)
    assert (
        "color:{type:<escape>STRING<escape>,nullable:true,anyOf:[{type:<escape>STRING<escape>,"
        "ref:<escape>#/$defs/Color<escape>},{type:<escape>NULL<escape>}]}"
    ) in prompt


@pytest.mark.parametrize("case", sorted(CASES))
def test_d4_repaired_schema_is_valid_json_schema(case: str) -> None:
    Draft202012Validator.check_schema(params(CASES[case]))
    Draft202012Validator.check_schema(params(repaired_tool(CASES[case])))


@pytest.mark.parametrize("case", sorted(CASES))
def test_d4_no_constraint_of_the_original_is_lost(case: str) -> None:
    raw = CASES[case]
    repaired = repaired_tool(raw)
    assert {k: v for k, v in repaired.items() if k != "function"} == {
        k: v for k, v in raw.items() if k != "function"
    }
    assert {k: v for k, v in repaired["function"].items() if k != "parameters"} == {
        k: v for k, v in raw["function"].items() if k != "parameters"
    }
    assert_kept(params(raw), params(repaired))


def test_d4_the_corpus_exercises_every_constraint_kind() -> None:
    for case in CASES.values():
        assert_kept(params(case), params(repaired_tool(case)))
    wanted = {
        "enum", "required", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems",
        "uniqueItems", "items", "prefixItems", "properties", "additionalProperties", "$ref",
        "$defs", "const", "default", "format", "discriminator", "anyOf", "oneOf",
    }  # fmt: skip
    assert wanted <= KEPT, wanted - KEPT


@pytest.mark.parametrize("case", sorted(CASES))
def test_d4_every_schema_position_ends_with_a_standard_string_type(case: str) -> None:
    for node in schema_nodes(params(repaired_tool(CASES[case]))):
        assert isinstance(node, dict) and node["type"] in STANDARD_TYPES, node


@pytest.mark.parametrize("case", sorted(CASES))
def test_d3_repair_of_generated_schemas_is_idempotent_and_agrees_in_place(case: str) -> None:
    body = chat_body([CASES[case]])
    once = normalize_body(body)
    assert normalize_body(once.body).body is once.body
    in_place = [json.loads(json.dumps(CASES[case]))]
    assert repair_tools(in_place) == once.repairs
    assert in_place == json.loads(once.body)["tools"]
    assert repair_tools(in_place) == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_d7_repaired_schema_still_accepts_what_the_model_produces(case: str) -> None:
    raw, repaired = params(CASES[case]), params(repaired_tool(CASES[case]))
    for model in INSTANCES[CASES[case]["function"]["name"]]:
        instance = model.model_dump(mode="json")
        Draft202012Validator(raw).validate(instance)
        ProviderValidator(repaired).validate(instance)


def test_d7_pydantic_ref_fields_are_typed_from_their_definitions() -> None:
    repaired = params(repaired_tool(CASES["pydantic-CreateTask"]))
    assert repaired["properties"]["priority"] == {
        "$ref": "#/$defs/Priority",
        "default": 2,
        "type": "integer",
    }
    assert repaired["$defs"] == params(CASES["pydantic-CreateTask"])["$defs"]  # already typed
    mail = params(repaired_tool(CASES["pydantic-SendMail"]))
    assert mail["properties"]["home"] == {
        "$ref": "#/$defs/Address",
        "description": "Sender address",
        "type": "object",
    }
    assert mail["properties"]["by_name"]["additionalProperties"] == {
        "$ref": "#/$defs/Address",
        "type": "object",
    }


def test_d7_recursive_model_as_the_whole_parameters_is_an_object() -> None:
    raw = params(CASES["pydantic-Node"])
    assert set(raw) == {"$defs", "$ref"}
    repaired = params(repaired_tool(CASES["pydantic-Node"]))
    assert repaired["type"] == "object"
    children = repaired["$defs"]["Node"]["properties"]["children"]
    assert children["items"] == {"$ref": "#/$defs/Node", "type": "object"}


def test_d8_discriminated_and_plain_unions() -> None:
    pets = params(repaired_tool(CASES["pydantic-AdoptPet"]))["properties"]
    assert pets["pet"]["type"] == "object" and "nullable" not in pets["pet"]
    assert pets["pet"]["discriminator"] == {
        "mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"},
        "propertyName": "kind",
    }
    assert (pets["backup"]["type"], pets["backup"]["nullable"]) == ("object", True)
    assert (pets["code"]["type"], pets["code"]["nullable"]) == ("integer", True)
    assert pets["label"]["type"] == "string"  # mixed Literal: typed from its default


def test_d6_any_fields_get_the_placeholder_and_empty_members_record_their_meaning() -> None:
    props = params(repaired_tool(CASES["pydantic-PlotTree"]))["properties"]
    assert props["payload"] == {"default": None, "title": "Payload", "type": "string"}
    assert props["extra"]["anyOf"] == [
        {"type": "string", SCHEMA_RECORD_KEY: True},
        {"type": "null"},
    ]
    assert (props["extra"]["type"], props["extra"]["nullable"]) == ("string", True)


@pytest.mark.parametrize("model", TOOL_MODELS, ids=lambda m: m.__name__)
def test_d1_the_three_schema_homes_get_the_same_repair(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    body = json.dumps(
        {
            "tools": [
                {"type": "function", "function": {"name": "chat", "parameters": schema}},
                {"type": "function", "name": "flat", "parameters": schema},
                {"name": "anthropic", "input_schema": schema},
            ]
        }
    ).encode()
    chat, flat, anthropic = json.loads(normalize_body(body).body)["tools"]
    assert chat["function"]["parameters"] == flat["parameters"] == anthropic["input_schema"]


# --- generated models, property-based ---------------------------------------------------------

LEAVES: tuple[Any, ...] = (
    int,
    str,
    float,
    bool,
    Any,
    datetime,
    Priority,
    Color,
    Address,
    Node,
    Literal["a", "b"],
    Literal[1, 2],
    Literal["x", 1],
)


def subscript(generic: Any, args: Any) -> Any:
    """``generic[args]`` for annotations built at run time."""
    return generic[args]


def _compound(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Optional[t], list[t], dict[str, t], Union[a, b] and tuple[a, b], built at run time."""
    pairs = st.tuples(inner, inner)
    return st.one_of(
        inner.map(lambda t: subscript(Optional, t)),
        inner.map(lambda t: subscript(list, t)),
        inner.map(lambda t: subscript(dict, (str, t))),
        pairs.map(lambda p: subscript(Union, p)),
        pairs.map(lambda p: subscript(tuple, p)),
    )


field_types = st.recursive(st.sampled_from(LEAVES), _compound, max_leaves=4)


@st.composite
def generated_models(draw: st.DrawFn) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for index, annotation in enumerate(draw(st.lists(field_types, min_size=1, max_size=4))):
        optional = draw(st.booleans())
        fields[f"f{index}"] = (
            (subscript(Optional, annotation), None) if optional else (annotation, ...)
        )
    model: type[BaseModel] = create_model("Generated", **fields)
    return model


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=generated_models(), helper=st.booleans())
def test_d4_any_generated_model_repairs_to_a_renderable_valid_schema(
    model: type[BaseModel], helper: bool
) -> None:
    tool = dict(openai.pydantic_function_tool(model)) if helper else pydantic_tool(model)  # type: ignore[arg-type]
    repaired = repaired_tool(tool)
    Draft202012Validator.check_schema(params(repaired))
    assert_kept(params(tool), params(repaired))
    for node in schema_nodes(params(repaired)):
        assert isinstance(node, dict) and node["type"] in STANDARD_TYPES, node
    render_tool(compile_template(WALK_SOURCE, Strictness.STRICT), repaired)
    again = normalize_body(chat_body([repaired]))
    assert not again.changed
