"""Unit tests for contract.schema: one test per case of rules D1-D3."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contract.schema import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DEPTH,
    SCHEMA_RECORD_KEY,
    NormalizeResult,
    normalize_body,
    repair_tools,
)

# --- helpers ---------------------------------------------------------------------------


def chat_body(parameters: Any, **siblings: Any) -> bytes:
    """A chat-completions body with one tool whose parameters are ``parameters``."""
    doc = {
        "model": "m",
        **siblings,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
    }
    return json.dumps(doc).encode()


def changed(body: bytes, **kwargs: Any) -> NormalizeResult:
    result = normalize_body(body, **kwargs)
    assert result.changed, f"expected a repair of {body!r}"
    assert result.body != body
    return result


def unchanged(body: bytes, skipped: str | None, **kwargs: Any) -> NormalizeResult:
    result = normalize_body(body, **kwargs)
    assert result == NormalizeResult(body, False, 0, skipped)
    assert result.body is body
    return result


def tools_of(result: NormalizeResult) -> list[Any]:
    tools = json.loads(result.body)["tools"]
    assert isinstance(tools, list)
    return tools


def params_of(parameters: Any) -> dict[str, Any]:
    """Repair a one-tool chat body and return its repaired ``function.parameters``."""
    params = tools_of(changed(chat_body(parameters)))[0]["function"]["parameters"]
    assert isinstance(params, dict)
    return params


def props_of(properties: dict[str, Any]) -> dict[str, Any]:
    """Repair ``{"type":"object","properties":...}`` and return the repaired properties."""
    props = params_of({"type": "object", "properties": properties})["properties"]
    assert isinstance(props, dict)
    return props


TYPELESS = {"properties": {"u": {"enum": ["c", "f"]}}}
REPAIRED_TYPELESS = {"properties": {"u": {"enum": ["c", "f"], "type": "string"}}, "type": "object"}


# --- D2: the per-node repair -------------------------------------------------------------


def test_d2_typeless_params_object_and_enum_property_gain_types() -> None:
    params = params_of({"properties": {"unit": {"enum": ["c", "f"], "description": "unit"}}})
    assert params == {
        "properties": {"unit": {"enum": ["c", "f"], "description": "unit", "type": "string"}},
        "type": "object",
    }


def test_d2_existing_types_kept_and_nested_array_items_typed() -> None:
    props = props_of(
        {"tags": {"type": "array", "items": {"description": "a tag"}}, "q": {"type": "string"}}
    )
    assert props == {
        "tags": {"type": "array", "items": {"description": "a tag", "type": "string"}},
        "q": {"type": "string"},
    }


def test_d2_additional_properties_schema_is_recursed() -> None:
    props = props_of({"meta": {"additionalProperties": {"description": "a value"}}})
    assert props["meta"] == {
        "additionalProperties": {"description": "a value", "type": "string"},
        "type": "object",
    }


def test_d2_bare_boolean_additional_properties_untouched_but_makes_parent_object() -> None:
    props = props_of(
        {
            "open": {"type": "object", "additionalProperties": True},
            "closed": {"additionalProperties": False},
        }
    )
    assert props["open"] == {"type": "object", "additionalProperties": True}
    assert props["closed"] == {"additionalProperties": False, "type": "object"}


def test_d2_any_of_union_typed_from_first_non_null_member() -> None:
    # The null member also makes the node nullable (D8, added by issue 6).
    props = props_of({"n": {"anyOf": [{"type": "null"}, {"type": "number"}, {"type": "string"}]}})
    assert props["n"] == {
        "anyOf": [{"type": "null"}, {"type": "number"}, {"type": "string"}],
        "type": "number",
        "nullable": True,
    }


def test_d2_union_keys_are_consulted_in_any_of_one_of_all_of_order() -> None:
    props = props_of(
        {
            "a": {"allOf": [{"type": "integer"}], "oneOf": [{"type": "boolean"}]},
            "b": {"allOf": [{"type": "integer"}], "anyOf": [{"type": "null"}, "x"]},
            "c": {"oneOf": [{"type": "null"}]},
        }
    )
    assert props["a"]["type"] == "boolean"
    assert props["b"]["type"] == "integer"
    assert props["c"]["type"] == "string"  # only null members: fall back to string


def test_d2_union_members_collapse_before_parent_infers() -> None:
    props = props_of(
        {"u": {"anyOf": [{"type": ["string", "null"]}, {"type": "integer"}], "description": "u"}}
    )
    assert props["u"] == {
        "anyOf": [{"type": "string", "nullable": True}, {"type": "integer"}],
        "description": "u",
        "type": "string",
    }


def test_d2_union_members_that_are_typeless_are_inferred_before_parent() -> None:
    # The member only becomes "object" by its own repair; the parent must see that.
    props = props_of({"u": {"oneOf": [{"properties": {}}, {"type": "string"}]}})
    assert props["u"] == {
        "oneOf": [{"properties": {}, "type": "object"}, {"type": "string"}],
        "type": "object",
    }


def test_d2_string_null_collapses_to_string_nullable() -> None:
    props = props_of({"city": {"type": ["string", "null"], "description": "city"}})
    assert props["city"] == {"type": "string", "description": "city", "nullable": True}


def test_d2_null_integer_collapses_to_integer_nullable() -> None:
    assert props_of({"n": {"type": ["null", "integer"]}})["n"] == {
        "type": "integer",
        "nullable": True,
    }


def test_d2_null_only_collapses_to_null_without_nullable() -> None:
    assert props_of({"x": {"type": ["null"]}})["x"] == {"type": "null"}


def test_d2_multi_member_type_takes_first_non_null_and_no_nullable_without_null() -> None:
    props = props_of({"x": {"type": ["integer", "string"]}, "y": {"type": ["null", "null"]}})
    assert props["x"] == {"type": "integer"}
    assert props["y"] == {"type": "null"}


def test_d2_nested_objects_and_items_collapse() -> None:
    props = props_of(
        {
            "opts": {"type": "object", "properties": {"snooze": {"type": ["integer", "null"]}}},
            "tags": {"type": "array", "items": {"type": ["string", "null"]}},
        }
    )
    assert props["opts"]["properties"]["snooze"] == {"type": "integer", "nullable": True}
    assert props["tags"]["items"] == {"type": "string", "nullable": True}


def test_d2_deeply_nested_items_and_properties_are_reached() -> None:
    props = props_of(
        {
            "grid": {
                "type": "array",
                "items": {"items": {"properties": {"name": {"description": "n"}}}},
            }
        }
    )
    assert props["grid"] == {
        "type": "array",
        "items": {
            "items": {
                "properties": {"name": {"description": "n", "type": "string"}},
                "type": "object",
            },
            "type": "array",
        },
    }


def test_d2_tuple_form_items_members_are_schemas() -> None:
    props = props_of({"pair": {"items": [{"enum": [1]}, {"type": ["number", "null"]}, 3]}})
    assert props["pair"] == {
        "items": [{"enum": [1], "type": "string"}, {"type": "number", "nullable": True}, 3],
        "type": "array",
    }


def test_d2_numeric_type_values_fall_back_to_structural_inference() -> None:
    props = props_of(
        {
            "cfg": {"type": 42, "properties": {"k": {"type": "string"}}},
            "v": {"type": 7, "description": "v"},
            "list": {"type": [1, 2], "items": {"type": "string"}},
        }
    )
    assert props["cfg"] == {"type": "object", "properties": {"k": {"type": "string"}}}
    assert props["v"] == {"type": "string", "description": "v"}
    assert props["list"] == {"type": "array", "items": {"type": "string"}}


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (None, "string"),
        (True, "string"),
        ({"x": "y"}, "string"),
        ([], "string"),
    ],
)
def test_d2_other_non_string_type_values_collapse(declared: Any, expected: str) -> None:
    # A present type is always rewritten, even on a node with no schema markers.
    assert props_of({"p": {"type": declared}})["p"] == {"type": expected}


def test_d2_non_string_members_are_ignored_when_collapsing() -> None:
    assert props_of({"p": {"type": [None, 3, "null", "boolean"]}})["p"] == {
        "type": "boolean",
        "nullable": True,
    }


def test_d2_collapsed_type_keeps_its_key_position() -> None:
    body = chat_body({"type": "object", "properties": {"a": {"type": ["string", "null"], "z": 1}}})
    assert b'"a":{"type":"string","z":1,"nullable":true}' in changed(body).body


def test_d2_top_level_params_node_collapses() -> None:
    params = params_of({"type": ["object", "null"], "properties": {"q": {"type": "string"}}})
    assert params == {"type": "object", "properties": {"q": {"type": "string"}}, "nullable": True}


def test_d2_explicit_nullable_is_never_overwritten() -> None:
    props = props_of(
        {
            "kept": {"type": ["string", "null"], "nullable": False},
            "odd": {"type": ["string", "null"], "nullable": "yes"},
            "set": {"type": ["string", "null"]},
        }
    )
    assert props["kept"] == {"type": "string", "nullable": False}
    assert props["odd"] == {"type": "string", "nullable": "yes"}
    assert props["set"] == {"type": "string", "nullable": True}


def test_d4_missing_type_filled_at_every_schema_position() -> None:
    # Issue 6 widened D2's "schema-looking nodes only": every node at a schema position is
    # typed -- the empty schema with its meaning recorded (D6), a default-only node from
    # its value (D10).
    props = props_of(
        {
            "bare": {},
            "titled": {"title": "t", "default": 1},
            "desc": {"description": "d"},
            "obj": {"properties": {}},
            "arr": {"items": {"type": "string"}},
            "both": {"items": {}, "properties": {}},
        }
    )
    assert props["bare"] == {"type": "string", "x-hedgerow-schema": True}
    assert props["titled"] == {"title": "t", "default": 1, "type": "integer"}
    assert props["desc"] == {"description": "d", "type": "string"}
    assert props["obj"] == {"properties": {}, "type": "object"}
    assert props["arr"] == {"items": {"type": "string"}, "type": "array"}
    assert props["both"]["type"] == "object"  # properties wins over items


def test_d9_schema_root_without_markers_is_typed_object() -> None:
    # Before issue 6 such a home stayed typeless; templates read parameters['type'] too.
    assert params_of({"title": "nothing schema-like"}) == {
        "title": "nothing schema-like",
        "type": "object",
    }


def test_d2_non_schema_positions_are_never_repaired() -> None:
    # Objects under enum/default/examples/const/not are data or unsupported keywords.
    params = params_of(
        {
            "properties": {
                "p": {
                    "type": "string",
                    "enum": [{"description": "data"}],
                    "default": {"items": []},
                    "not": {"description": "x"},
                }
            }
        }
    )
    assert params["properties"]["p"] == {
        "type": "string",
        "enum": [{"description": "data"}],
        "default": {"items": []},
        "not": {"description": "x"},
    }


def test_d2_repair_count_is_one_per_changed_node() -> None:
    result = changed(
        chat_body(
            {
                "properties": {
                    "a": {"type": ["string", "null"]},
                    "b": {"enum": [1]},
                    "c": {"type": "string"},
                }
            }
        )
    )
    assert result.repairs == 3  # root, a, b


# --- D4-D10 (issue 6): real-world schemas ------------------------------------------------

RECORD = SCHEMA_RECORD_KEY


def repaired_again_is_unchanged(repaired_parameters: Any) -> None:
    unchanged(chat_body(repaired_parameters), None)


def test_d4_every_schema_position_is_typed() -> None:
    params = params_of(
        {
            "$defs": {"D": {"title": "d"}},
            "definitions": {"E": {"default": "x"}},
            "patternProperties": {"^x-": {"description": "ext"}},
            "properties": {
                "t": {"prefixItems": [{"title": "first"}, {"enum": [1]}]},
                "m": {"additionalProperties": {"title": "value"}},
                "u": {"oneOf": [{"title": "a"}, {"format": "date"}]},
            },
        }
    )
    assert params["$defs"]["D"] == {"title": "d", "type": "string"}
    assert params["definitions"]["E"] == {"default": "x", "type": "string"}
    assert params["patternProperties"]["^x-"] == {"description": "ext", "type": "string"}
    props = params["properties"]
    assert props["t"] == {
        "prefixItems": [{"title": "first", "type": "string"}, {"enum": [1], "type": "string"}],
        "type": "array",
    }
    assert props["m"]["additionalProperties"] == {"title": "value", "type": "string"}
    assert props["m"]["type"] == "object"
    assert props["u"]["oneOf"] == [
        {"title": "a", "type": "string"},
        {"format": "date", "type": "string"},
    ]
    assert params["type"] == "object"


def test_d4_pattern_properties_make_an_object_and_prefix_items_an_array() -> None:
    props = props_of({"p": {"patternProperties": {}}, "q": {"prefixItems": []}})
    assert (props["p"]["type"], props["q"]["type"]) == ("object", "array")


def test_d4_keywords_that_are_not_positions_are_left_alone() -> None:
    untouched = {
        "not": {"title": "n"},
        "if": {"title": "i"},
        "then": True,
        "contains": {},
        "propertyNames": {"title": "p"},
        "dependentSchemas": {"a": {}},
        "examples": [{}],
    }
    # Nothing to repair: the body comes back as the same bytes.
    body = chat_body({"type": "object", "properties": {"p": {"type": "array", **untouched}}})
    unchanged(body, None)


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("dict", "object"),
        ("Dict", "object"),
        ("map", "object"),
        ("float", "number"),
        ("double", "number"),
        ("decimal", "number"),
        ("int", "integer"),
        ("INT", "integer"),
        ("long", "integer"),
        ("bool", "boolean"),
        ("Boolean", "boolean"),
        ("list", "array"),
        ("List", "array"),
        ("tuple", "array"),
        ("set", "array"),
        ("any", "string"),
        ("Any", "string"),
        ("str", "string"),
        ("String", "string"),
        (" string ", "string"),
        ("text", "string"),
        ("Object", "object"),
        ("NULL", "null"),
        ("None", "null"),
    ],
)
def test_d5_non_standard_type_names_map_case_insensitively(declared: str, expected: str) -> None:
    assert props_of({"p": {"type": declared, "description": "d"}})["p"] == {
        "type": expected,
        "description": "d",
    }


def test_d5_unknown_type_names_are_kept() -> None:
    body = chat_body(
        {"type": "object", "properties": {"a": {"type": "date"}, "b": {"type": "List[int]"}}}
    )
    unchanged(body, None)


def test_d5_aliases_inside_type_lists_collapse_with_nullable() -> None:
    props = props_of({"a": {"type": ["None", "Int"]}, "b": {"type": ["dict", "null"]}})
    assert props["a"] == {"type": "integer", "nullable": True}
    assert props["b"] == {"type": "object", "nullable": True}


def test_d6_boolean_schemas_become_typed_and_record_their_meaning() -> None:
    params = params_of(
        {
            "$defs": {"Anything": True, "Nothing": False},
            "properties": {
                "yes": True,
                "no": False,
                "tags": {"items": True},
                "pair": {"prefixItems": [True, {"type": "integer"}], "items": False},
                "u": {"anyOf": [False, {"type": "null"}]},
            },
        }
    )
    typed_true = {"type": "string", RECORD: True}
    typed_false = {"type": "string", RECORD: False}
    assert params["$defs"] == {"Anything": typed_true, "Nothing": typed_false}
    props = params["properties"]
    assert (props["yes"], props["no"]) == (typed_true, typed_false)
    assert props["tags"] == {"items": typed_true, "type": "array"}
    assert props["pair"] == {
        "prefixItems": [typed_true, {"type": "integer"}],
        "items": typed_false,
        "type": "array",
    }
    assert props["u"] == {
        "anyOf": [typed_false, {"type": "null"}],
        "type": "string",
        "nullable": True,
    }


def test_d6_boolean_additional_properties_stays_a_constraint() -> None:
    body = chat_body({"type": "object", "properties": {}, "additionalProperties": False})
    unchanged(body, None)


def test_d6_empty_schema_is_typed_and_records_that_it_admits_anything() -> None:
    props = props_of({"any": {}, "list": {"type": "array", "items": {}}})
    assert props["any"] == {"type": "string", RECORD: True}
    assert props["list"]["items"] == {"type": "string", RECORD: True}


def test_d6_d9_empty_home_is_an_object_without_a_record() -> None:
    # Tool arguments are a JSON object: an empty parameters schema loses nothing as one.
    assert params_of({}) == {"type": "object"}


def test_d6_booleans_past_the_depth_cap_are_left_and_reported() -> None:
    result = changed(chat_body({"properties": {"p": True}}), max_depth=1)
    assert tools_of(result)[0]["function"]["parameters"] == {
        "properties": {"p": True},
        "type": "object",
    }
    assert result.skipped == "depth"


def test_d7_local_refs_into_defs_and_definitions_are_typed_from_the_target() -> None:
    params = params_of(
        {
            "$defs": {"Unit": {"enum": ["c", "f"], "type": "string"}, "Pt": {"properties": {}}},
            "definitions": {"N": {"type": "integer"}},
            "properties": {
                "unit": {"$ref": "#/$defs/Unit", "default": "c"},
                "pt": {"$ref": "#/$defs/Pt", "description": "a point"},
                "n": {"$ref": "#/definitions/N"},
            },
        }
    )
    props = params["properties"]
    assert props["unit"] == {"$ref": "#/$defs/Unit", "default": "c", "type": "string"}
    # The target's type wins over D2's description fallback.
    assert props["pt"] == {"$ref": "#/$defs/Pt", "description": "a point", "type": "object"}
    assert props["n"] == {"$ref": "#/definitions/N", "type": "integer"}
    assert params["$defs"]["Pt"] == {"properties": {}, "type": "object"}  # $defs stay valid


def test_d7_json_pointer_escapes_and_percent_encoding_resolve() -> None:
    props = props_of(
        {
            "slash": {"$ref": "#/properties/target~1x/items"},
            "tilde": {"$ref": "#/properties/a~0b"},
            "pct": {"$ref": "#/properties/%C3%A9t%C3%A9"},
            "target/x": {"type": "array", "items": {"type": "boolean"}},
            "a~b": {"type": "number"},
            "été": {"type": "integer"},
        }
    )
    assert props["slash"]["type"] == "boolean"
    assert props["tilde"]["type"] == "number"
    assert props["pct"]["type"] == "integer"


def test_d7_refs_to_list_members_and_to_the_root() -> None:
    params = params_of(
        {
            "anyOf": [{"type": "object", "properties": {}}],
            "properties": {
                "first": {"$ref": "#/anyOf/0"},
                "bad_index": {"$ref": "#/anyOf/01", "description": "d"},
                "past_end": {"$ref": "#/anyOf/5", "title": "t"},
                "me": {"$ref": "#"},
            },
        }
    )
    props = params["properties"]
    assert props["first"]["type"] == "object"
    assert props["bad_index"]["type"] == "string"  # leading zero: not a JSON pointer index
    assert props["past_end"]["type"] == "string"
    assert props["me"]["type"] == "object"


def test_d7_typeless_targets_are_typed_before_their_referrers_whatever_the_order() -> None:
    # The referrer comes first in document order; its target is only repaired later.
    params = params_of(
        {
            "properties": {"early": {"$ref": "#/$defs/Late"}},
            "$defs": {
                "Late": {"anyOf": [{"$ref": "#/$defs/Leaf"}, {"type": "null"}]},
                "Leaf": {"type": ["integer", "null"]},
            },
        }
    )
    assert params["$defs"]["Leaf"] == {"type": "integer", "nullable": True}
    assert params["$defs"]["Late"]["type"] == "integer"
    assert params["properties"]["early"] == {"$ref": "#/$defs/Late", "type": "integer"}


def test_d7_ref_chains_and_cycles_terminate() -> None:
    params = params_of(
        {
            "$defs": {
                "A": {"$ref": "#/$defs/B"},
                "B": {"$ref": "#/$defs/A"},
                "Self": {"$ref": "#/$defs/Self"},
                "Chain1": {"$ref": "#/$defs/Chain2"},
                "Chain2": {"$ref": "#/$defs/Obj"},
                "Obj": {"type": "object"},
                "Tree": {"properties": {"kids": {"items": {"$ref": "#/$defs/Tree"}}}},
            },
            "properties": {"loop": {"$ref": "#/$defs/A"}, "chain": {"$ref": "#/$defs/Chain1"}},
        }
    )
    defs = params["$defs"]
    assert defs["A"]["type"] == defs["B"]["type"] == defs["Self"]["type"] == "string"
    assert defs["Chain1"]["type"] == defs["Chain2"]["type"] == "object"
    assert defs["Tree"]["properties"]["kids"]["items"] == {"$ref": "#/$defs/Tree", "type": "object"}
    assert params["properties"]["chain"]["type"] == "object"
    repaired_again_is_unchanged(params)


def test_d7_a_ref_chain_longer_than_the_hop_budget_still_ends_typed() -> None:
    defs: dict[str, Any] = {f"D{i}": {"$ref": f"#/$defs/D{i + 1}"} for i in range(500)}
    defs["D500"] = {"type": "integer"}
    params = params_of({"$defs": defs, "properties": {"p": {"$ref": "#/$defs/D0"}}})
    assert all(isinstance(node["type"], str) for node in params["$defs"].values())
    assert params["properties"]["p"]["type"] in ("integer", "string")
    repaired_again_is_unchanged(params)


def test_d7_unresolvable_refs_fall_back_like_any_typeless_node() -> None:
    props = props_of(
        {
            "remote": {"$ref": "https://example.com/schemas/x.json"},
            "anchor": {"$ref": "#thing"},
            "missing": {"$ref": "#/$defs/Nope", "default": 3},
            "junk": {"$ref": 42, "description": "d"},
        }
    )
    assert props["remote"] == {"$ref": "https://example.com/schemas/x.json", "type": "string"}
    assert props["anchor"]["type"] == "string"
    assert props["missing"]["type"] == "integer"
    assert props["junk"] == {"$ref": 42, "description": "d", "type": "string"}


def test_d7_ref_to_a_boolean_definition_is_typed_as_its_stand_in() -> None:
    params = params_of({"$defs": {"T": True}, "properties": {"p": {"$ref": "#/$defs/T"}}})
    assert params["properties"]["p"] == {"$ref": "#/$defs/T", "type": "string"}


def test_d7_target_past_the_depth_cap_types_the_referrer_but_stays_as_is() -> None:
    deep = {"properties": {"a": {"properties": {"b": {"items": {"type": "integer"}}}}}}
    body = chat_body(
        {
            **deep,
            "$defs": {},
            "properties": {**deep["properties"], "r": {"$ref": "#/properties/a/properties/b"}},
        }
    )
    params = tools_of(changed(body, max_depth=2))[0]["function"]["parameters"]
    assert params["properties"]["r"] == {"$ref": "#/properties/a/properties/b", "type": "array"}
    assert params["properties"]["a"]["properties"]["b"] == {"items": {"type": "integer"}}


def test_d8_union_with_a_null_member_sets_nullable() -> None:
    props = props_of(
        {
            "any": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "one": {"oneOf": [{"type": "null"}, {"$ref": "#/properties/any"}]},
            "all": {"allOf": [{"type": "integer"}, {"type": "null"}]},
            "kept": {"anyOf": [{"type": "string"}, {"type": "null"}], "nullable": False},
            "typed": {"type": "object", "anyOf": [{"type": "object"}, {"type": "null"}]},
            "nulls": {"anyOf": [{"type": "null"}]},
            "listed": {"anyOf": [{"type": ["integer", "null"]}]},
        }
    )
    assert (props["any"]["type"], props["any"]["nullable"]) == ("string", True)
    assert (props["one"]["type"], props["one"]["nullable"]) == ("string", True)
    assert props["all"]["type"] == "integer" and "nullable" not in props["all"]
    assert (props["kept"]["type"], props["kept"]["nullable"]) == ("string", False)
    assert "nullable" not in props["typed"]  # an explicit type is not widened
    assert props["nulls"]["type"] == "string" and "nullable" not in props["nulls"]
    assert props["listed"]["type"] == "integer" and "nullable" not in props["listed"]


def test_d9_home_fallback_is_object_except_for_an_enum_home() -> None:
    assert params_of({"description": "no arguments"})["type"] == "object"
    assert params_of({"enum": ["a"]})["type"] == "string"
    assert params_of({"title": "t", "default": {}})["type"] == "object"
    assert params_of({"const": 1})["type"] == "integer"


@pytest.mark.parametrize(
    ("keyword", "token", "expected"),
    [
        ("const", '"x"', "string"),
        ("const", "7", "integer"),
        ("const", "18446744073709551616", "integer"),
        ("const", "1.0", "number"),
        ("const", "1e3", "number"),
        ("const", "true", "boolean"),
        ("const", "null", "null"),
        ("const", "{}", "object"),
        ("const", "[1]", "array"),
        ("default", "false", "boolean"),
        ("default", "-0.5", "number"),
        ("default", "[]", "array"),
        ("default", "null", "string"),  # a null default says nothing about the type
    ],
)
def test_d10_const_and_default_only_nodes_are_typed_from_their_value(
    keyword: str, token: str, expected: str
) -> None:
    head = '{"tools":[{"function":{"parameters":{"type":"object","properties":{"p":{"title":"t",'
    tail = "}}}}}]}"
    body = (head + f'"{keyword}":{token}' + tail).encode()
    assert json.loads(body)  # well-formed
    assert changed(body).body == (head + f'"{keyword}":{token},"type":"{expected}"' + tail).encode()


def test_d10_const_wins_over_default_and_repair_tools_reads_python_values() -> None:
    tools: list[Any] = [
        {
            "input_schema": {
                "properties": {
                    "c": {"const": 1.5, "default": "x"},
                    "d": {"default": 3},
                    "b": {"default": True},
                }
            }
        }
    ]
    assert repair_tools(tools) == 4
    props = tools[0]["input_schema"]["properties"]
    assert (props["c"]["type"], props["d"]["type"], props["b"]["type"]) == (
        "number",
        "integer",
        "boolean",
    )


# --- D1: schema homes ---------------------------------------------------------------------


def test_d1_responses_flat_entries_are_repaired() -> None:
    body = json.dumps(
        {
            "model": "m",
            "input": "hi",
            "tools": [
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "Get weather",
                    "parameters": {"properties": {"city": {"type": ["string", "null"]}}},
                },
            ],
        }
    ).encode()
    (tool,) = tools_of(changed(body))
    assert tool == {
        "type": "function",
        "name": "get_weather",
        "description": "Get weather",
        "parameters": {
            "properties": {"city": {"type": "string", "nullable": True}},
            "type": "object",
        },
    }


def test_d1_non_object_function_makes_the_entry_flat() -> None:
    body = json.dumps(
        {"tools": [{"name": "f", "function": "notdict", "parameters": TYPELESS}]}
    ).encode()
    (tool,) = tools_of(changed(body))
    assert tool == {"name": "f", "function": "notdict", "parameters": REPAIRED_TYPELESS}


def test_d1_null_function_makes_the_entry_flat() -> None:
    body = json.dumps({"tools": [{"function": None, "parameters": TYPELESS}]}).encode()
    assert tools_of(changed(body)) == [{"function": None, "parameters": REPAIRED_TYPELESS}]


def test_d1_object_function_claims_the_entry_and_stray_parameters_are_untouched() -> None:
    body = json.dumps(
        {"tools": [{"function": {"name": "f", "parameters": TYPELESS}, "parameters": TYPELESS}]}
    ).encode()
    (tool,) = tools_of(changed(body))
    assert tool == {
        "function": {"name": "f", "parameters": REPAIRED_TYPELESS},
        "parameters": TYPELESS,
    }


def test_d1_object_function_without_parameters_still_claims_the_entry() -> None:
    body = json.dumps({"tools": [{"function": {"name": "f"}, "parameters": TYPELESS}]}).encode()
    unchanged(body, None)


def test_d1_anthropic_input_schema_is_repaired_without_touching_the_entry() -> None:
    body = json.dumps(
        {
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Get weather",
                    "input_schema": {
                        "type": ["object", "null"],
                        "properties": {
                            "days": {"type": "array", "items": {"type": ["integer", "null"]}}
                        },
                    },
                },
            ]
        }
    ).encode()
    (tool,) = tools_of(changed(body))
    assert tool == {
        "name": "get_weather",
        "description": "Get weather",
        "input_schema": {
            "type": "object",
            "properties": {
                "days": {"type": "array", "items": {"type": "integer", "nullable": True}}
            },
            "nullable": True,
        },
    }


def test_d1_input_schema_is_repaired_independently_of_the_openai_homes() -> None:
    body = json.dumps(
        {"tools": [{"function": {"parameters": TYPELESS}, "input_schema": TYPELESS}]}
    ).encode()
    result = changed(body)
    assert tools_of(result) == [
        {"function": {"parameters": REPAIRED_TYPELESS}, "input_schema": REPAIRED_TYPELESS}
    ]
    assert result.repairs == 4


def test_d1_entries_without_a_schema_pass_through() -> None:
    entries = [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "function"},
        {"function": {"name": "f"}},
        {"name": "x", "description": "a description is not a schema home"},
    ]
    unchanged(json.dumps({"tools": entries}).encode(), None)
    body = json.dumps({"tools": [*entries, {"name": "g", "input_schema": TYPELESS}]}).encode()
    assert tools_of(changed(body)) == [*entries, {"name": "g", "input_schema": REPAIRED_TYPELESS}]


def test_d1_all_three_shapes_and_a_scalar_in_one_array() -> None:
    body = (
        b'{"model":"m","tools":['
        b'{"type":"function","function":{"name":"chat","parameters":{"properties":{"a":{"type":["string","null"]}}}}},'
        b'{"type":"function","name":"flat","parameters":{"properties":{"b":{"enum":["x"]}}}},'
        b'{"name":"anthropic","input_schema":{"type":["object","null"],"properties":{"c":{"description":"c"}}}},'
        b'42,"x",null,[1]]}'
    )
    result = changed(body)
    assert result.body == (
        b'{"model":"m","tools":['
        b'{"type":"function","function":{"name":"chat","parameters":{"properties":{"a":{"type":"string","nullable":true}},"type":"object"}}},'
        b'{"type":"function","name":"flat","parameters":{"properties":{"b":{"enum":["x"],"type":"string"}},"type":"object"}},'
        b'{"name":"anthropic","input_schema":{"type":"object","properties":{"c":{"description":"c","type":"string"}},"nullable":true}},'
        b'42,"x",null,[1]]}'
    )
    assert result.repairs == 6


@pytest.mark.parametrize("schema", ["null", "42", '"s"', "true", "[]", '[{"enum":[1]}]'])
def test_d1_null_and_non_object_schemas_are_left_as_is(schema: str) -> None:
    body = (
        f'{{"tools":[{{"function":{{"name":"chat","parameters":{schema}}}}},'
        f'{{"name":"flat","parameters":{schema}}},{{"name":"anthropic","input_schema":{schema}}}]}}'
    )
    unchanged(body.encode(), None)


# --- D3: caps, guards, byte-identity, numbers -----------------------------------------------


def test_d3_non_tool_body_is_the_same_bytes_object() -> None:
    body = b'{"model": "m",  "messages": [{"role": "user", "content": "hi"}]}'
    unchanged(body, "no_tools_bytes")


def test_d3_byte_gate_runs_before_the_size_cap() -> None:
    body = b'{"pad":"' + b"a" * 64 + b'"}'
    unchanged(body, "no_tools_bytes", max_bytes=8)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","messages":[{"role":"user","content":"tools"}]}',
        b'{"metadata":{"tools":[{"function":{"parameters":{"properties":{"u":{"enum":["c"]}}}}}]}}',
        b'{"tools":"none"}',
        b'{"tools":{"function":{"parameters":{"properties":{"u":{"enum":["c"]}}}}}}',
        b'{"tools":null}',
        b'{"tools":3}',
    ],
)
def test_d3_tools_bytes_without_a_top_level_tools_array(body: bytes) -> None:
    unchanged(body, "tools_not_array")


@pytest.mark.parametrize("body", [b'["tools"]', b'"tools"', b'  [ "tools" ]  ', b'[{"tools":[]}]'])
def test_d3_non_object_root_is_unchanged(body: bytes) -> None:
    unchanged(body, "not_object")


@pytest.mark.parametrize(
    "body",
    [
        b'{"tools":[',
        b'{"tools":[}',
        b'{"tools":[],}',
        b'{tools:"tools"}',
        b'\xef\xbb\xbf{"tools":[]}',  # a UTF-8 BOM is not JSON
        b'{"tools":[{"function":{"parameters":{"properties":{"u":{"enum":["\xff"]}}}}}]}',
        b'{"tools":[],"x":"\x01"}',  # raw control character inside a string
        b'{"tools":[{"input_schema":{"properties":{"a":{"enum":[NaN]}}}}]}',
        b'{"tools":[{"input_schema":{"properties":{"a":{"default":Infinity}}}}]}',
        b'{"tools":[{"input_schema":{"properties":{"a":{"default":-Infinity}}}}]}',
        b'["tools"',
    ],
)
def test_d3_malformed_bodies_are_unchanged(body: bytes) -> None:
    unchanged(body, "invalid_json")


@pytest.mark.parametrize("suffix", [b'{"x":1}', b"garbage", b" ,", b"\x00", b"  []", b'\n"tools"'])
def test_d3_trailing_data_leaves_the_body_unchanged(suffix: bytes) -> None:
    unchanged(chat_body(TYPELESS) + suffix, "trailing_data")


def test_d3_surrounding_json_whitespace_is_not_trailing_data() -> None:
    result = changed(b" \r\n\t" + chat_body(TYPELESS) + b" \r\n\t")
    assert tools_of(result)[0]["function"]["parameters"] == REPAIRED_TYPELESS


def pad_body(total: int) -> bytes:
    """A repairable tools body of exactly ``total`` bytes."""
    prefix = b'{"pad":"'
    suffix = b'","tools":[{"function":{"parameters":{"properties":{"u":{"enum":["c"]}}}}}]}'
    body = prefix + b"a" * (total - len(prefix) - len(suffix)) + suffix
    assert len(body) == total
    return body


def test_d3_body_exactly_at_the_4_mib_cap_is_repaired() -> None:
    assert DEFAULT_MAX_BODY_BYTES == 4 * 1024 * 1024
    result = changed(pad_body(DEFAULT_MAX_BODY_BYTES))
    assert tools_of(result)[0]["function"]["parameters"]["properties"]["u"]["type"] == "string"


def test_d3_body_one_byte_over_the_4_mib_cap_is_unchanged() -> None:
    unchanged(pad_body(DEFAULT_MAX_BODY_BYTES + 1), "too_large")


def test_d3_size_cap_is_a_parameter() -> None:
    body = pad_body(200)
    unchanged(body, "too_large", max_bytes=199)
    assert normalize_body(body, max_bytes=200).changed


def chain_body(levels: int) -> bytes:
    """Tools body whose schema is ``levels`` nested nodes, each typeless and repairable."""
    wrappers = levels - 1
    node = '{"properties":{"p":' * wrappers + '{"description":"leaf"}' + "}}" * wrappers
    return ('{"tools":[{"function":{"parameters":' + node + "}}]}").encode()


def chain_types(result: NormalizeResult) -> list[str | None]:
    """The ``type`` of each node of a chain, root first."""
    node = tools_of(result)[0]["function"]["parameters"]
    types = []
    while True:
        types.append(node.get("type"))
        if "properties" not in node:
            return types
        node = node["properties"]["p"]


def test_d3_schema_depth_64_is_fully_repaired() -> None:
    assert DEFAULT_MAX_DEPTH == 64
    result = changed(chain_body(64))
    assert chain_types(result) == ["object"] * 63 + ["string"]
    assert result.repairs == 64
    assert result.skipped is None


def test_d3_schema_depth_65_leaves_the_node_past_the_cap_as_is() -> None:
    result = changed(chain_body(65))
    assert chain_types(result) == ["object"] * 64 + [None]
    assert result.repairs == 64
    assert result.skipped == "depth"
    assert b'{"p":{"description":"leaf"}}' in result.body


def test_d3_schema_far_past_the_cap_is_cut_without_recursion_errors() -> None:
    result = changed(chain_body(300))
    assert chain_types(result) == ["object"] * 64 + [None] * 236
    assert result.skipped == "depth"


def test_d3_depth_cap_is_a_parameter() -> None:
    result = changed(chain_body(5), max_depth=2)
    assert chain_types(result) == ["object", "object", None, None, None]
    unchanged(chain_body(5), "depth", max_depth=0)


def test_d3_depth_cut_with_nothing_repaired_is_unchanged_and_reported() -> None:
    body = b'{"tools":[{"input_schema":{"type":"object","properties":{"a":{"enum":[1]}}}}]}'
    unchanged(body, "depth", max_depth=1)


@pytest.mark.parametrize("levels", [2_000, 100_000])
def test_d3_pathological_json_nesting_never_raises(levels: int) -> None:
    schema_deep = chain_body(levels)
    unchanged(schema_deep, "depth")
    elsewhere = b'{"tools":[],"m":' + b"[" * levels + b"]" * levels + b"}"
    unchanged(elsewhere, "depth")


def test_d3_deep_non_schema_nesting_within_parser_limits_is_serialised() -> None:
    nested = b"[" * 300 + b"]" * 300
    body = b'{"m":' + nested + b',"tools":[{"input_schema":{"enum":[1]}}]}'
    result = changed(body)
    assert (
        result.body
        == b'{"m":' + nested + b',"tools":[{"input_schema":{"enum":[1],"type":"string"}}]}'
    )


def test_d3_already_valid_body_is_the_same_bytes_with_key_order_and_whitespace_kept() -> None:
    body = (
        b'{\n  "tools": [ {"function": {"parameters": {"type": "object", "properties": '
        b'{"z": {"type": "string"}, "a": {"type": "array", "items": {"type": "integer"}}}}}} ],\n'
        b'  "model" : "m", "temperature": 1.50\n}\n'
    )
    unchanged(body, None)


def test_d3_empty_tools_array_is_unchanged() -> None:
    unchanged(b'{"tools": []}', None)


def test_d3_numbers_and_every_sibling_field_survive_exactly() -> None:
    body = (
        b'{ "model": "gemma", "max_tokens": 9007199254740993, "temperature": 0.30000000000000004,\n'
        b' "top_p": 1e-7, "n": -0, "z": -0.0, "e": 1E+2, "big": 1e400, "tiny": 1e-400,\n'
        b' "dec": 123456789012345678901234567890.123456789012345678901234567890,\n'
        b' "stream": true, "stop": null, "flag": false,\n'
        b' "meta": {"trace": "a<>&b \\u00e9 \\" \\\\ \xc3\xa9 \\ud83d\\ude00",\n'
        b' "z": [], "a": {}}, "tools": [{"type": "function",\n'
        b' "function": {"name": "f", "strict": true,\n'
        b' "parameters": {"type": "object", "properties": {"limit": {"description": "l",\n'
        b' "default": 9007199254740993, "minimum": -0.0, "maximum": 1.0E10,\n'
        b' "enum": [1.000, 2e0]}}}}}],\n'
        b' "tail": [1, 2.50, {"k": 0.1}]}'
    )
    result = changed(body)
    assert result.body == (
        b'{"model":"gemma","max_tokens":9007199254740993,"temperature":0.30000000000000004,'
        b'"top_p":1e-7,"n":-0,"z":-0.0,"e":1E+2,"big":1e400,"tiny":1e-400,'
        b'"dec":123456789012345678901234567890.123456789012345678901234567890,'
        b'"stream":true,"stop":null,"flag":false,'
        b'"meta":{"trace":"a<>&b \xc3\xa9 \\" \\\\ \xc3\xa9 \xf0\x9f\x98\x80",'
        b'"z":[],"a":{}},"tools":[{"type":"function","function":{"name":"f","strict":true,'
        b'"parameters":{"type":"object","properties":{"limit":{"description":"l",'
        b'"default":9007199254740993,"minimum":-0.0,"maximum":1.0E10,"enum":[1.000,2e0],"type":"integer"}}}}}],'
        b'"tail":[1,2.50,{"k":0.1}]}'
    )


def test_d3_output_matches_compact_json_dumps() -> None:
    doc = {
        "model": "m",
        "messages": [{"role": "user", "content": "</script> \u2028 \t \x7f 日本"}],
        "tools": [{"input_schema": {"properties": {"a": {"type": ["boolean", "null"]}}}}],
    }
    result = changed(json.dumps(doc, indent=2).encode())
    expected = json.loads(json.dumps(doc))
    expected["tools"][0]["input_schema"] = {
        "properties": {"a": {"type": "boolean", "nullable": True}},
        "type": "object",
    }
    assert result.body == json.dumps(expected, separators=(",", ":"), ensure_ascii=False).encode()


def test_d3_lone_surrogates_force_ascii_escapes_so_output_stays_valid_utf8() -> None:
    body = b'{"m":"\\ud800 \xc3\xa9","tools":[{"input_schema":{"enum":[1]}}]}'
    result = changed(body)
    assert (
        result.body
        == b'{"m":"\\ud800 \\u00e9","tools":[{"input_schema":{"enum":[1],"type":"string"}}]}'
    )
    assert json.loads(result.body)["m"] == "\ud800 \u00e9"


def test_d3_duplicate_keys_last_value_wins_at_first_position() -> None:
    body = b'{"model":"a","tools":[{"input_schema":{"enum":[1]}}],"model":"b"}'
    assert (
        changed(body).body
        == b'{"model":"b","tools":[{"input_schema":{"enum":[1],"type":"string"}}]}'
    )


def test_d3_duplicate_keys_decide_what_is_repaired_and_unchanged_bodies_keep_them() -> None:
    # Downstream Python parsers see the last "tools" / "type", so that is what counts.
    unchanged(b'{"tools":[{"input_schema":{"enum":[1]}}],"tools":[]}', None)
    unchanged(b'{"tools":[{"input_schema":{"type":["string","null"],"type":"string"}}]}', None)
    result = changed(b'{"tools":[{"input_schema":{"type":"string","type":["string","null"]}}]}')
    assert result.body == b'{"tools":[{"input_schema":{"type":"string","nullable":true}}]}'


def test_d3_idempotent_on_bytes() -> None:
    body = (
        b'{"model":"m","max_tokens":9007199254740993,"tools":[{"type":"function","function":'
        b'{"name":"f","parameters":{"type":["object","null"],"properties":{'
        b'"u":{"type":["string","null"],"description":"u"},"e":{"enum":["a"]},'
        b'"n":{"anyOf":[{"type":["integer","null"]},{"type":"null"}]}}}}}]}'
    )
    once = changed(body)
    twice = normalize_body(once.body)
    assert twice == NormalizeResult(once.body, False, 0, None)
    assert twice.body is once.body


# --- repair_tools: the in-place API the provider agent uses --------------------------------


def test_d1_repair_tools_repairs_in_place_and_counts() -> None:
    tools: list[Any] = [
        {
            "function": {
                "parameters": {"properties": {"a": {"type": ["number", "null"], "default": 0.1}}}
            }
        },
        {"parameters": {"enum": [2**64]}},
        {"input_schema": None},
        7,
    ]
    assert repair_tools(tools) == 3
    assert tools == [
        {
            "function": {
                "parameters": {
                    "properties": {"a": {"type": "number", "default": 0.1, "nullable": True}},
                    "type": "object",
                }
            }
        },
        {"parameters": {"enum": [2**64], "type": "string"}},
        {"input_schema": None},
        7,
    ]
    assert repair_tools(tools) == 0


def test_d3_repair_tools_is_iterative_and_survives_very_deep_schemas() -> None:
    levels = 20_000
    root: dict[str, Any] = {"description": "leaf"}
    for _ in range(levels - 1):
        root = {"properties": {"p": root}}
    assert repair_tools([{"input_schema": root}], max_depth=levels) == levels
    assert repair_tools([{"input_schema": root}], max_depth=levels) == 0


def test_d3_repair_tools_terminates_on_cyclic_schemas() -> None:
    node: dict[str, Any] = {"description": "loop"}
    node["items"] = node
    assert repair_tools([{"input_schema": node}], max_depth=10) == 1
    assert node["type"] == "array"
