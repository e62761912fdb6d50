"""Property tests for contract.schema (D1-D3) over arbitrary bodies and schemas."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.schema import normalize_body

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UNION_KEYS = ("anyOf", "oneOf", "allOf")
TYPE_NAMES = ("string", "integer", "number", "boolean", "object", "array", "null")
# Non-standard names (D5) the repair maps, in the spellings real tools use.
ALIASES = {"dict": "object", "Int": "integer", "LIST": "array", "any": "string", "String": "string"}
# Positions whose booleans become typed schemas (D6); additionalProperties keeps its boolean.
MAP_POSITIONS = ("properties", "patternProperties", "$defs", "definitions")
LIST_POSITIONS = ("prefixItems", *UNION_KEYS)
RECORD = "x-hedgerow-schema"
STANDARD = {n: n for n in TYPE_NAMES} | {
    "str": "string",
    "text": "string",
    "any": "string",
    "float": "number",
    "double": "number",
    "decimal": "number",
    "int": "integer",
    "long": "integer",
    "bool": "boolean",
    "dict": "object",
    "map": "object",
    "list": "array",
    "tuple": "array",
    "set": "array",
    "none": "null",
}
MISSING = object()


def canonical(name: str) -> str:
    """The oracle of D5: a declared string type after the repair."""
    return STANDARD.get(name.strip().lower(), name) if name not in TYPE_NAMES else name


# --- strategies ------------------------------------------------------------------------------

names = st.sampled_from(["a", "b", "type", "nullable", "items", "properties", "é", ""])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(names, children, max_size=3)
    ),
    max_leaves=8,
)
type_names = st.sampled_from((*TYPE_NAMES, *ALIASES))
type_values = st.one_of(
    type_names,
    st.lists(st.one_of(type_names, scalars), max_size=3),
    scalars,
    st.just({"type": "string"}),
)
# Local pointers that often resolve (names above), loops ("#"), escapes, remote and junk refs.
refs = st.one_of(
    st.sampled_from(
        [
            "#",
            "#/$defs/a",
            "#/$defs/b",
            "#/definitions/a",
            "#/properties/a",
            "#/properties/a/items",
            "#/anyOf/0",
            "#/$defs/%C3%A9",
            "#/$defs/~1",
            "#/$defs/type",
            "#/$defs/a/$defs/b",
            "https://example.com/s.json",
            "#anchor",
        ]
    ),
    scalars,
)


def schema_nodes(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A JSON-Schema-ish object whose sub-schema positions hold ``children``."""
    return st.fixed_dictionaries(
        {},
        optional={
            "type": type_values,
            "properties": st.dictionaries(names, children, max_size=3),
            "items": st.one_of(children, st.lists(children, max_size=2)),
            "additionalProperties": st.one_of(st.booleans(), children),
            "anyOf": st.lists(children, max_size=3),
            "oneOf": st.lists(children, max_size=2),
            "allOf": st.lists(children, max_size=2),
            "enum": st.lists(json_values, max_size=2),
            "description": st.text(max_size=3),
            "nullable": st.one_of(st.booleans(), st.none()),
            "default": json_values,
            "title": st.text(max_size=3),
            "patternProperties": st.dictionaries(names, children, max_size=2),
            "prefixItems": st.lists(children, max_size=2),
            "$defs": st.dictionaries(names, children, max_size=2),
            "definitions": st.dictionaries(names, children, max_size=1),
            "const": json_values,
            "$ref": refs,
        },
    )


def nest(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A schema node guaranteed to hold at least one sub-schema, so trees grow deep."""
    structural = st.one_of(
        st.dictionaries(names, children, min_size=1, max_size=2).map(lambda p: {"properties": p}),
        children.map(lambda c: {"items": c}),
        children.map(lambda c: {"additionalProperties": c}),
        st.sampled_from(LIST_POSITIONS).flatmap(
            lambda k: st.lists(children, min_size=1, max_size=2).map(lambda m: {k: m})
        ),
        st.sampled_from(MAP_POSITIONS[1:]).flatmap(
            lambda k: st.dictionaries(names, children, min_size=1, max_size=2).map(lambda m: {k: m})
        ),
    )
    return st.builds(lambda node, sub: {**node, **sub}, schema_nodes(scalars), structural)


wide_schemas = st.recursive(st.one_of(scalars, schema_nodes(scalars)), schema_nodes, max_leaves=12)
deep_schemas = st.recursive(schema_nodes(scalars), nest, max_leaves=25)
schemas = st.one_of(wide_schemas, deep_schemas)
tool_entries = st.one_of(
    st.builds(lambda s: {"type": "function", "function": {"name": "f", "parameters": s}}, schemas),
    st.builds(lambda s: {"type": "function", "name": "f", "parameters": s}, schemas),
    st.builds(lambda s: {"name": "f", "input_schema": s}, schemas),
    st.fixed_dictionaries(
        {},
        optional={
            "function": st.one_of(
                scalars, st.fixed_dictionaries({}, optional={"parameters": schemas})
            ),
            "parameters": schemas,
            "input_schema": schemas,
            "type": st.text(max_size=3),
        },
    ),
    scalars,
)
documents = st.fixed_dictionaries(
    {"tools": st.lists(tool_entries, max_size=4)},
    optional={"model": st.text(max_size=4), "messages": json_values, "extra": json_values},
)


# Small caps exercise the cut; the default cap exercises full repair of every tree.
depth_caps = st.one_of(st.integers(0, 4), st.just(64))


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A serialised request document, in varied but valid JSON spellings."""
    doc = draw(documents)
    indent = draw(st.sampled_from([None, 1]))
    ensure_ascii = draw(st.booleans())
    return json.dumps(doc, indent=indent, ensure_ascii=ensure_ascii).encode()


# --- oracles -----------------------------------------------------------------------------------


def parse_exact(body: bytes) -> Any:
    """Parse with every number kept as its token, so comparisons are digit-exact."""
    return json.loads(body, parse_float=lambda t: ("num", t), parse_int=lambda t: ("num", t))


def schema_homes(entry: Any) -> list[tuple[dict[str, Any], str]]:
    """(container, key) of each schema home of a tool entry, per D1."""
    if not isinstance(entry, dict):
        return []
    function = entry.get("function")
    homes = [(function, "parameters") if isinstance(function, dict) else (entry, "parameters")]
    homes.append((entry, "input_schema"))
    return [(c, k) for c, k in homes if isinstance(c.get(k), dict)]


def without_homes(doc: Any) -> Any:
    """The document with every object-valued schema home replaced by a placeholder."""
    doc = json.loads(json.dumps(doc))
    if isinstance(doc, dict) and isinstance(doc.get("tools"), list):
        for entry in doc["tools"]:
            for container, key in schema_homes(entry):
                container[key] = "<home>"
    return doc


Path = tuple[str, str | int | None]


def sub_schemas(node: dict[str, Any]) -> list[tuple[Path, Any]]:
    """(path, child) of each sub-schema position of a schema node: objects, and booleans
    where D6 replaces them (everywhere but additionalProperties)."""
    found: list[tuple[Path, Any]] = []
    for key in MAP_POSITIONS:
        mapping = node.get(key)
        if isinstance(mapping, dict):
            found += [((key, k), v) for k, v in mapping.items() if isinstance(v, dict | bool)]
    items = node.get("items")
    if isinstance(items, dict | bool):
        found.append((("items", None), items))
    elif isinstance(items, list):
        found += [(("items", i), v) for i, v in enumerate(items) if isinstance(v, dict | bool)]
    if isinstance(node.get("additionalProperties"), dict):
        found.append((("additionalProperties", None), node["additionalProperties"]))
    for key in LIST_POSITIONS:
        members = node.get(key)
        if isinstance(members, list):
            found += [((key, i), m) for i, m in enumerate(members) if isinstance(m, dict | bool)]
    return found


POSITION_KEYS = (*MAP_POSITIONS, "items", "additionalProperties", *LIST_POSITIONS)


def locate(node: Any, path: Path) -> Any:
    key, member = path
    node = node[key]
    return node if member is None else node[member]


def check_only_repairs(before: Any, after: Any, depth: int, max_depth: int) -> int:
    """Assert ``after`` is ``before`` with at most D2/D4-D10 repairs; return how many nodes
    changed.

    Within the cap, a schema node may only gain or rewrite ``type`` (a declared string only
    to its D5 name), gain ``nullable: true``, and -- the empty schema only -- gain the D6
    record; a boolean schema becomes ``{"type": "string", record: <the boolean>}``.
    Everything else, including whole sub-trees past the cap, must be exactly equal.
    """
    if depth > max_depth:
        assert after == before
        return 0
    if isinstance(before, bool):
        assert after == {"type": "string", RECORD: before}
        return 1
    own = ("type", "nullable", RECORD)
    assert [k for k in after if k not in own] == [k for k in before if k not in own]
    assert "nullable" not in before or after["nullable"] == before["nullable"]
    assert RECORD not in before or after[RECORD] == before[RECORD]
    if RECORD in after and RECORD not in before:
        assert before == {} and depth > 1 and after == {"type": "string", RECORD: True}
    assert isinstance(after["type"], str)
    old_type = before.get("type", MISSING)
    if isinstance(old_type, str):
        assert after["type"] == canonical(old_type)
    if "nullable" in after and "nullable" not in before:
        assert after["nullable"] is True
        union_null = any(
            isinstance(m, dict) and m.get("type") == "null"
            for key in ("anyOf", "oneOf")
            for m in (after.get(key) if isinstance(after.get(key), list) else [])
        )
        listed_null = isinstance(old_type, list) and any(
            isinstance(m, str) and canonical(m) == "null" for m in old_type
        )
        assert union_null or listed_null
    changes = int(after != before)  # this node's own keys; children are counted apart
    if changes:
        changes = int(any(after.get(k, MISSING) != before.get(k, MISSING) for k in own))
    for key in before:
        if key in own or key in POSITION_KEYS:
            continue  # positions are compared member by member below
        assert after[key] == before[key]
    for path, child in sub_schemas(before):
        changes += check_only_repairs(child, locate(after, path), depth + 1, max_depth)
    # Non-schema values at sub-schema keys (scalars, junk members) stay as they were.
    for key in POSITION_KEYS:
        if key in before:
            assert strip_children(after[key], key) == strip_children(before[key], key)
    return changes


def strip_children(value: Any, key: str) -> Any:
    """A sub-schema container with its schema children blanked (they are checked apart)."""

    def blank(child: Any) -> Any:
        schema = isinstance(child, dict) or (
            isinstance(child, bool) and key != "additionalProperties"
        )
        return "<schema>" if schema else child

    if key in MAP_POSITIONS and isinstance(value, dict):
        return {k: blank(v) for k, v in value.items()}
    if isinstance(value, list) and key not in MAP_POSITIONS:
        return [blank(v) for v in value]
    if key not in MAP_POSITIONS:
        return blank(value)
    return value


def assert_reachable_nodes_typed(node: dict[str, Any], depth: int, max_depth: int) -> None:
    """Every schema node within the cap, the home included, has a string ``type``."""
    if depth > max_depth:
        return
    assert isinstance(node["type"], str), node
    for _, child in sub_schemas(node):
        if depth + 1 <= max_depth:
            assert isinstance(child, dict), child
            assert_reachable_nodes_typed(child, depth + 1, max_depth)


# --- properties ------------------------------------------------------------------------------


@FAST
@given(
    body=st.one_of(st.binary(max_size=64), bodies()),
    cut=st.integers(0, 400),
    junk=st.binary(max_size=8),
)
def test_d3_never_raises_and_unchanged_means_same_bytes(body: bytes, cut: int, junk: bytes) -> None:
    # Splicing junk into a valid body yields the truncated/garbled inputs real clients send.
    for candidate in (body, body[:cut] + junk + body[cut:], b'"tools"' + body, body + b'"tools"'):
        result = normalize_body(candidate)
        assert result.changed == (result.body is not candidate)
        if not result.changed:
            assert result.repairs == 0
        else:
            assert result.repairs > 0
            json.loads(result.body)


@FAST
@given(body=bodies(), max_depth=depth_caps)
def test_d3_idempotent(body: bytes, max_depth: int) -> None:
    once = normalize_body(body, max_depth=max_depth)
    twice = normalize_body(once.body, max_depth=max_depth)
    assert not twice.changed
    assert twice.body is once.body


@FAST
@given(body=bodies(), max_depth=depth_caps)
def test_d1_d2_touches_nothing_outside_schema_homes_and_only_type_and_nullable_inside(
    body: bytes, max_depth: int
) -> None:
    result = normalize_body(body, max_depth=max_depth)
    before, after = parse_exact(body), parse_exact(result.body)
    assert without_homes(after) == without_homes(before)
    assert list(after) == list(before)  # top-level key order kept
    changes = 0
    for old_entry, new_entry in zip(before["tools"], after["tools"], strict=True):
        for (old_container, key), (new_container, _) in zip(
            schema_homes(old_entry), schema_homes(new_entry), strict=True
        ):
            changes += check_only_repairs(old_container[key], new_container[key], 1, max_depth)
    assert result.repairs == changes
    assert result.changed == (changes > 0)


@FAST
@given(body=bodies(), max_depth=depth_caps)
def test_d2_every_reachable_schema_node_has_a_string_type(body: bytes, max_depth: int) -> None:
    after = json.loads(normalize_body(body, max_depth=max_depth).body)
    for entry in after["tools"]:
        for container, key in schema_homes(entry):
            assert_reachable_nodes_typed(container[key], 1, max_depth)


number_tokens = st.from_regex(
    r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,4})?", fullmatch=True
)


@FAST
@given(tokens=st.lists(number_tokens, min_size=1, max_size=6), spaced=st.booleans())
def test_d3_number_tokens_survive_exactly(tokens: list[str], spaced: bool) -> None:
    sep = ", " if spaced else ","
    listed = sep.join(tokens)
    body = (
        f'{{"n": [{listed}], "tools": [{{"function": {{"parameters": {{"properties": '
        f'{{"a": {{"enum": [{listed}], "default": {tokens[0]}}}}}}}}}}}]}}'
    ).encode()
    result = normalize_body(body)
    assert result.changed
    # D10: typed from the default's token, read without converting it.
    typed = "number" if any(c in tokens[0] for c in ".eE") else "integer"
    assert (
        result.body
        == (
            f'{{"n":[{",".join(tokens)}],"tools":[{{"function":{{"parameters":{{"properties":'
            f'{{"a":{{"enum":[{",".join(tokens)}],"default":{tokens[0]},"type":"{typed}"}}}},'
            f'"type":"object"}}}}}}]}}'
        ).encode()
    )
