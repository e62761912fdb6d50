"""Tool-schema repair (docs/behavior.md D1-D3 and docs/schema-repair-rules.md D4-D10), pure:
no I/O, no grpc, no global state.

Open-weight chat templates render tool parameter types with filters such as
``{{ value['type'] | upper }}``. A legitimate schema whose ``type`` is missing (enum-only,
anyOf or ``$ref`` properties, Pydantic's ``{"title": ...}`` for ``Any``), not a string
(``["string", "null"]``, what Pydantic emits for ``Optional[...]``), a boolean schema, or
a non-standard name (``dict``, ``int``) makes that render throw or recurse. This module
rewrites those nodes so that every schema node a template walks carries a string
``type``; it only adds or collapses ``type``/``nullable``, reads local ``$ref`` targets
for typing, and records what a replaced boolean or empty schema meant
(:data:`SCHEMA_RECORD_KEY`). Every other key, constraint and number stays as sent.

Two entry points:

- :func:`normalize_body` works on the raw request bytes (gateway, normalizer service).
  It is total: caps, guards and every parse failure return the input bytes untouched.
- :func:`repair_tools` works in place on an already-parsed ``tools`` array (the provider
  agent applies it to the chat body it receives).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NoReturn
from urllib.parse import unquote

DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
"""Bodies larger than this are never parsed (docs/behavior.md, normalization caps)."""

DEFAULT_MAX_DEPTH: Final = 64
"""Schema nodes nested deeper than this are left as is (docs/behavior.md, normalization caps)."""

_TOOLS_NEEDLE: Final = b'"tools"'
_JSON_WHITESPACE: Final = " \t\n\r"
_UNION_KEYS: Final = ("anyOf", "oneOf", "allOf")
# Schema positions (D4): keys whose object values are sub-schemas, keys whose list members
# are; plus items (one schema or a tuple list) and map-valued additionalProperties.
_MAP: Final = "map"  # an object whose values are schemas
_LIST: Final = "list"  # a list whose members are schemas
_ITEMS: Final = "items"  # one schema (a boolean one too) or a list of schemas
_SINGLE: Final = "single"  # one object schema; a boolean here is a plain constraint
_POSITION_KINDS: Final[dict[str, str]] = {
    "properties": _MAP,
    "patternProperties": _MAP,
    "$defs": _MAP,
    "definitions": _MAP,
    "items": _ITEMS,
    "prefixItems": _LIST,
    "additionalProperties": _SINGLE,
    **{key: _LIST for key in _UNION_KEYS},
}
_MAX_HOPS: Final = 32
"""How many $ref/union steps one type decision may follow before giving up (D7)."""

SCHEMA_RECORD_KEY: Final = "x-hedgerow-schema"
"""Key recording what a replaced boolean or empty schema meant (D6): ``true`` for the
schema ``true`` and for ``{}`` (any value is valid), ``false`` for the schema ``false``
(no value is valid). The ``type`` beside it is a render placeholder, not a constraint."""

PLACEHOLDER_TYPE: Final = "string"
"""The type given to a node nothing else types (D9), and to replaced boolean/empty schemas."""

_STANDARD_TYPES: Final = frozenset(
    ("string", "number", "integer", "boolean", "object", "array", "null")
)
# D5: non-standard type names seen in hand-written tools and function-calling datasets,
# matched case-insensitively after trimming. ``any`` has no JSON Schema name; string is
# the placeholder every template renders.
_TYPE_ALIASES: Final[dict[str, str]] = {
    **{name: name for name in _STANDARD_TYPES},
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


class _Missing:
    """Sentinel for an absent key or an unresolvable $ref."""

    __slots__ = ()


_MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class NormalizeResult:
    """Outcome of :func:`normalize_body`.

    ``body`` is the input object itself when ``changed`` is false. ``repairs`` counts schema
    nodes changed (``type`` rewritten or filled in, ``nullable`` added, a boolean or empty
    schema replaced). ``skipped`` names the cap or guard that
    stopped (all or, for ``"depth"``, part of) the work: ``"no_tools_bytes"``,
    ``"too_large"``, ``"invalid_json"``, ``"trailing_data"``, ``"depth"``, ``"not_object"``,
    ``"tools_not_array"``; ``None`` when the whole tools array was examined.
    """

    body: bytes
    changed: bool
    repairs: int
    skipped: str | None


class _Raw:
    """A JSON number token kept as its source text, so it is re-emitted digit for digit.

    Python floats lose digits (``0.30000000000000004`` survives, ``1e400`` and long
    decimals do not) and ints lose the sign of ``-0``; the repair never inspects numbers,
    so it never needs their value.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"_Raw({self.text!r})"


def _reject_constant(token: str) -> NoReturn:
    # NaN/Infinity are not JSON (RFC 8259); Python would accept them and we could not
    # re-emit them as valid JSON, so such a body counts as invalid and passes through as is.
    raise ValueError(f"non-standard JSON constant {token}")


# Immutable after construction, so sharing it across calls and threads is safe (the
# stdlib shares its own default decoder the same way).
_DECODER: Final = json.JSONDecoder(
    parse_float=_Raw, parse_int=_Raw, parse_constant=_reject_constant
)
_QUOTE_UTF8: Final[Callable[[str], str]] = json.JSONEncoder(ensure_ascii=False).encode
_QUOTE_ASCII: Final[Callable[[str], str]] = json.JSONEncoder(ensure_ascii=True).encode


def normalize_body(
    body: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> NormalizeResult:
    """Repair the tool schemas of a raw JSON request body (D1-D3). Never raises.

    Checks, in order: the ``"tools"`` byte gate (nearly free for tool-less bodies), the
    size cap (``len(body) > max_bytes``), strict UTF-8 JSON with nothing but whitespace
    after the document (duplicate keys: the last value wins, as in every Python parser
    downstream; NaN/Infinity are rejected), an object root, a top-level ``tools`` array.
    Any of these failing, or nothing to repair, returns the very same ``body`` object.

    Otherwise returns the whole document re-serialised compactly, as
    ``json.dumps(doc, separators=(",", ":"), ensure_ascii=False)`` would, keeping key
    order and every number token exactly as written, with only the repairs applied
    (strings holding lone surrogates force ASCII escapes so the output stays valid
    UTF-8). Idempotent: normalizing the output again changes nothing.
    """
    if _TOOLS_NEEDLE not in body:
        return NormalizeResult(body, False, 0, "no_tools_bytes")
    if len(body) > max_bytes:
        return NormalizeResult(body, False, 0, "too_large")
    try:
        text = body.decode("utf-8")
        start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
        doc, end = _DECODER.raw_decode(text, start)
    except RecursionError:
        # The C scanner recurses per nesting level; pathological nesting must not escape.
        return NormalizeResult(body, False, 0, "depth")
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, rejected constants
        return NormalizeResult(body, False, 0, "invalid_json")
    if text[end:].strip(_JSON_WHITESPACE):
        return NormalizeResult(body, False, 0, "trailing_data")
    if not isinstance(doc, dict):
        return NormalizeResult(body, False, 0, "not_object")
    tools = doc.get("tools")
    if not isinstance(tools, list):
        return NormalizeResult(body, False, 0, "tools_not_array")

    repairs, truncated = _repair_tools(tools, max_depth)
    skipped = "depth" if truncated else None
    if repairs == 0:
        return NormalizeResult(body, False, 0, skipped)
    try:
        out = _serialize(doc)
    except RecursionError:
        # Only reachable for documents nested almost as deep as the parser allows.
        return NormalizeResult(body, False, 0, "depth")
    return NormalizeResult(out, True, repairs, skipped)


def repair_tools(tools: list[Any], *, max_depth: int = DEFAULT_MAX_DEPTH) -> int:
    """Repair, in place, every schema home of every entry of a parsed ``tools`` array.

    Schema homes (D1): an object ``function`` claims the entry and its ``parameters`` is
    the home (a stray top-level ``parameters`` beside it is untouched); otherwise the
    top-level ``parameters``; and, independently, ``input_schema``. Homes that are not
    objects, and entries that are not objects, are left alone. Only ``type`` and
    ``nullable`` keys of schema nodes are ever written, plus :data:`SCHEMA_RECORD_KEY` on
    a replaced boolean or empty schema (D2, D4-D10). Nodes deeper than ``max_depth`` (the
    home itself is depth 1) are not visited. Iterative, and $ref/union type decisions are
    budgeted and cycle-guarded, so neither deep, recursive nor cyclic input can overflow
    the stack. Returns the number of schema nodes changed (a replaced boolean counts one).
    """
    repairs, _ = _repair_tools(tools, max_depth)
    return repairs


def _repair_tools(tools: list[Any], max_depth: int) -> tuple[int, bool]:
    """Return (nodes repaired, whether the depth cap hid any schema node)."""
    repairs = 0
    truncated = False
    for entry in tools:
        if not isinstance(entry, dict):
            continue
        function = entry.get("function")
        if isinstance(function, dict):
            homes = (function.get("parameters"), entry.get("input_schema"))
        else:
            homes = (entry.get("parameters"), entry.get("input_schema"))
        for home in homes:
            if isinstance(home, dict):
                count, cut = _repair_schema(home, max_depth)
                repairs += count
                truncated = truncated or cut
    return repairs, truncated


def _repair_schema(root: dict[str, Any], max_depth: int) -> tuple[int, bool]:
    """Repair one schema tree children first; return (repairs, depth cap hit)."""
    if max_depth < 1:
        return 0, True
    home = _Home(root)
    repairs = 0
    truncated = False
    # Post-order with an explicit stack: a node is popped a second time (expanded=True)
    # only after all of its children, which were pushed above it, have been repaired.
    # Type decisions are memoised per node (_Home.decide), so a parent's union inference
    # and a $ref's target agree with what the children were (or will be) given.
    stack: list[tuple[dict[str, Any], int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, expanded = stack.pop()
        if expanded:
            repairs += _repair_node(node, home)
            continue
        declared = node.get("type")
        if declared.__class__ is not str or declared not in _STANDARD_TYPES:
            stack.append((node, depth, True))  # else nothing to repair at this node (D2)
        within = depth < max_depth
        children, replaced, found = _schema_children(node, replace=within)
        repairs += replaced
        if not within:
            truncated = truncated or found
        else:
            below = depth + 1
            stack.extend([(child, below, False) for child in children])
    return repairs, truncated


def _schema_children(
    node: dict[str, Any], *, replace: bool
) -> tuple[list[dict[str, Any]], int, bool]:
    """The object sub-schemas at the schema positions of a node (D4): properties,
    patternProperties, $defs and definitions values; items (one schema or a tuple list);
    prefixItems members; map-valued additionalProperties; anyOf/oneOf/allOf members.

    Boolean schemas at those positions (never a boolean additionalProperties, which stays
    a plain constraint) are replaced in place by typed schemas when ``replace`` (D6).
    Returns (object children, booleans replaced, whether any position holds a schema at
    all). Other values (numbers, strings, null) are not schemas and are left alone.
    """
    children: list[dict[str, Any]] = []
    booleans: list[tuple[dict[str, Any] | list[Any], Any]] = []  # (container, key)
    # One pass over the node's own keys: nodes hold a handful, positions are rare among them.
    for key, value in node.items():
        kind = _POSITION_KINDS.get(key)
        if kind is None:
            continue
        if kind == _MAP:
            if isinstance(value, dict):
                for name, child in value.items():
                    if isinstance(child, dict):
                        children.append(child)
                    elif isinstance(child, bool):
                        booleans.append((value, name))
        elif isinstance(value, dict):
            if kind != _LIST:  # items, map-valued additionalProperties
                children.append(value)
        elif isinstance(value, list):
            if kind != _SINGLE:  # list-form items, prefixItems, anyOf/oneOf/allOf
                for index, member in enumerate(value):
                    if isinstance(member, dict):
                        children.append(member)
                    elif isinstance(member, bool):
                        booleans.append((value, index))
        elif isinstance(value, bool) and kind == _ITEMS:
            booleans.append((node, key))
    if not replace:
        return children, 0, bool(children) or bool(booleans)
    for container, key in booleans:
        container[key] = _typed_boolean(container[key])
    return children, len(booleans), bool(children) or bool(booleans)


def _typed_boolean(value: bool) -> dict[str, Any]:
    """The typed stand-in for a boolean schema (D6); the boolean is kept under the record key."""
    return {"type": PLACEHOLDER_TYPE, SCHEMA_RECORD_KEY: value}


def _repair_node(node: dict[str, Any], home: _Home) -> int:
    """Give one node its decided string ``type`` (and ``nullable``, and the empty-schema
    record); return 1 if the node was changed, else 0."""
    if not node and node is not home.root:
        # The empty schema (D6): any value. The type is a placeholder; the record keeps the meaning.
        node["type"] = PLACEHOLDER_TYPE
        node[SCHEMA_RECORD_KEY] = True
        return 1
    declared = node.get("type")
    if declared.__class__ is str and declared in _STANDARD_TYPES:
        return 0  # the common case, decided without the memo (D2: a string type stays)
    new_type, nullable = home.decide(node) or (home.fallback(node), False)
    changed = 0
    if node.get("type", _MISSING) != new_type:
        node["type"] = new_type
        changed = 1
    if nullable and "nullable" not in node:
        # Keep the dropped null member as the key templates do understand.
        node["nullable"] = True
        changed = 1
    return changed


class _Home:
    """Type decisions for the nodes of one schema home, the document local ``$ref``
    pointers resolve against.

    ``decide`` computes a node's final type once, from the node itself and, for a $ref or
    a union, from the decisions of its target or members -- whether or not the traversal
    has reached those yet. Decisions are memoised per node, so the traversal, every $ref
    and every union reading a node agree; they are bounded by a hop budget and guarded
    against cycles ($ref loops, recursive models, cyclic Python objects).
    """

    __slots__ = ("_busy", "_decided", "_targets", "root")

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self._decided: dict[int, tuple[str, bool]] = {}
        self._busy: set[int] = set()
        self._targets: dict[str, Any] = {}

    def decide(self, node: dict[str, Any], hops: int = 0) -> tuple[str, bool] | None:
        """(the string ``type`` the node ends with, whether it gains ``nullable: true``);
        None when deciding would loop or exceed the hop budget."""
        declared = node.get("type")
        if declared.__class__ is str and declared in _STANDARD_TYPES:
            return declared, False
        key = id(node)
        found = self._decided.get(key)
        if found is not None:
            return found
        if key in self._busy or hops > _MAX_HOPS:
            return None
        self._busy.add(key)
        plan = self._plan(node, hops)
        self._busy.discard(key)
        self._decided[key] = plan
        return plan

    def fallback(self, node: dict[str, Any]) -> str:
        """The type of a node nothing else types (D9): string, except object for the home
        itself (tool arguments are a JSON object) unless it holds an enum (a scalar)."""
        if node is self.root and "enum" not in node:
            return "object"
        return PLACEHOLDER_TYPE

    def _plan(self, node: dict[str, Any], hops: int) -> tuple[str, bool]:
        declared = node.get("type", _MISSING)
        if isinstance(declared, str):
            return _canonical_type(declared), False  # D5
        if isinstance(declared, list):
            # D2: first non-null string member, nullable when a null member is dropped.
            members = [_canonical_type(m) for m in declared if isinstance(m, str)]
            concrete = next((m for m in members if m != "null"), None)
            if concrete is not None:
                return concrete, "null" in members
            if members:
                return members[0], False  # ["null"] keeps its honest "null"
        return self._inferred(node, hops)

    def _inferred(self, node: dict[str, Any], hops: int) -> tuple[str, bool]:
        """Type from structure (D2), local $ref (D7), union members (D2, D8), const or
        default value (D10), else the fallback (D9)."""
        if "properties" in node or "additionalProperties" in node or "patternProperties" in node:
            return "object", False
        if "items" in node or "prefixItems" in node:
            return "array", False
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self._target(ref)
            decided = self._member_type(target, hops)
            if decided is not None:
                return decided, False
        for key in _UNION_KEYS:
            members = node.get(key)
            if not isinstance(members, list):
                continue
            concrete: str | None = None
            has_null = False
            for member in members:
                decided = self._member_type(member, hops)
                if decided == "null":
                    has_null = True
                elif decided is not None and concrete is None:
                    concrete = decided
            if concrete is not None:
                return concrete, has_null and key != "allOf"
        if "const" in node:
            return _value_type(node["const"]), False
        default = node.get("default")
        if default is not None:
            return _value_type(default), False
        return self.fallback(node), False

    def _member_type(self, member: Any, hops: int) -> str | None:
        """Final type of a sub-schema or $ref target; None when it is not a schema."""
        if isinstance(member, bool):
            return PLACEHOLDER_TYPE
        if isinstance(member, dict):
            plan = self.decide(member, hops + 1)
            return None if plan is None else plan[0]
        return None

    def _target(self, ref: str) -> Any:
        """The value a local ``$ref`` points at in this home, or _MISSING (D7)."""
        if ref in self._targets:
            return self._targets[ref]
        target = _resolve_pointer(self.root, ref)
        self._targets[ref] = target
        return target


def _resolve_pointer(root: dict[str, Any], ref: str) -> Any:
    """Resolve ``#`` or ``#/json/pointer`` (percent-decoded, then ``~1`` -> ``/`` and
    ``~0`` -> ``~``) against ``root``; anything else (remote URIs, plain-name anchors,
    missing members) gives _MISSING."""
    if not ref.startswith("#"):
        return _MISSING
    fragment = unquote(ref[1:]) if "%" in ref else ref[1:]
    if not fragment:
        return root
    if not fragment.startswith("/"):
        return _MISSING
    node: Any = root
    for token in fragment[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if token not in node:
                return _MISSING
            node = node[token]
        elif isinstance(node, list):
            if not token.isdigit() or not token.isascii() or (len(token) > 1 and token[0] == "0"):
                return _MISSING
            index = int(token)
            if index >= len(node):
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


def _canonical_type(name: str) -> str:
    """A JSON Schema type name for a declared one (D5): standard names and known aliases
    map case-insensitively; unknown names are kept as written (they are strings, so they
    render)."""
    return _TYPE_ALIASES.get(name.strip().lower(), name) if name not in _STANDARD_TYPES else name


def _value_type(value: Any) -> str:
    """The JSON Schema type of a JSON value (D10)."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, _Raw):
        return "number" if any(c in value.text for c in ".eE") else "integer"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return PLACEHOLDER_TYPE  # pragma: no cover - nothing else comes out of JSON


def _serialize(doc: Any) -> bytes:
    """Compact JSON of a parsed document, number tokens verbatim, as UTF-8 bytes."""
    parts: list[str] = []
    _emit(doc, parts, _QUOTE_UTF8)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (legal as a \ud800 escape in JSON) cannot be UTF-8 encoded raw.
        parts.clear()
        _emit(doc, parts, _QUOTE_ASCII)
        return "".join(parts).encode("ascii")


def _emit(value: Any, parts: list[str], quote: Callable[[str], str]) -> None:
    """Append the compact JSON text of ``value`` to ``parts``.

    Recursion depth equals the document's nesting, which the parser already accepted.
    """
    if isinstance(value, str):
        parts.append(quote(value))
    elif isinstance(value, dict):
        parts.append("{")
        separator = ""
        for key, item in value.items():
            parts.append(separator)
            parts.append(quote(key))
            parts.append(":")
            _emit(item, parts, quote)
            separator = ","
        parts.append("}")
    elif isinstance(value, list):
        parts.append("[")
        separator = ""
        for item in value:
            parts.append(separator)
            _emit(item, parts, quote)
            separator = ","
        parts.append("]")
    elif isinstance(value, _Raw):
        parts.append(value.text)
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif value is None:
        parts.append("null")
    else:  # pragma: no cover - the parser and the repair produce nothing else
        raise TypeError(f"cannot serialise {type(value).__name__}")
