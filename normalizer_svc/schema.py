"""Tool-schema repair (BEHAVIOR.md D1-D3), pure: no I/O, no grpc, no global state.

Open-weight chat templates render tool parameter types with filters such as
``{{ value['type'] | upper }}``. A legitimate schema whose ``type`` is missing (enum-only
or anyOf properties) or not a string (``["string", "null"]``, what Pydantic emits for
``Optional[...]``) makes that render throw. This module rewrites those nodes so that
every schema node a template walks carries a string ``type``, and changes nothing else.

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

DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
"""Bodies larger than this are never parsed (BEHAVIOR.md normalization caps)."""

DEFAULT_MAX_DEPTH: Final = 64
"""Schema nodes nested deeper than this are left as is (BEHAVIOR.md normalization caps)."""

_TOOLS_NEEDLE: Final = b'"tools"'
_JSON_WHITESPACE: Final = " \t\n\r"
_UNION_KEYS: Final = ("anyOf", "oneOf", "allOf")
# D2: only nodes carrying one of these keys are schema-looking enough to get a default type.
_SCHEMA_MARKERS: Final = (
    "properties",
    "items",
    "additionalProperties",
    "enum",
    "description",
    *_UNION_KEYS,
)


@dataclass(frozen=True, slots=True)
class NormalizeResult:
    """Outcome of :func:`normalize_body`.

    ``body`` is the input object itself when ``changed`` is false. ``repairs`` counts schema
    nodes whose ``type`` was rewritten or filled in. ``skipped`` names the cap or guard that
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
    ``nullable`` keys of schema nodes are ever written (D2). Nodes deeper than
    ``max_depth`` (the home itself is depth 1) are not visited. Iterative, so neither deep
    nor cyclic input can overflow the stack. Returns the number of nodes repaired.
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
    """Repair one schema tree children first (D2); return (repairs, depth cap hit)."""
    if max_depth < 1:
        return 0, True
    repairs = 0
    truncated = False
    # Post-order with an explicit stack: a node is popped a second time (expanded=True)
    # only after all of its children, which were pushed above it, have been repaired.
    # The parent's union inference depends on that order (a member's ["string","null"]
    # must already read "string").
    stack: list[tuple[dict[str, Any], int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, expanded = stack.pop()
        if expanded:
            repairs += _repair_node(node)
            continue
        stack.append((node, depth, True))
        children = _schema_children(node)
        if not children:
            continue
        if depth >= max_depth:
            truncated = True
        else:
            stack.extend((child, depth + 1, False) for child in children)
    return repairs, truncated


def _schema_children(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Sub-schemas of a node: properties values, items (one schema or a tuple list),
    map-valued additionalProperties, anyOf/oneOf/allOf members. Non-objects are skipped."""
    children: list[dict[str, Any]] = []
    properties = node.get("properties")
    if isinstance(properties, dict):
        children.extend(v for v in properties.values() if isinstance(v, dict))
    items = node.get("items")
    if isinstance(items, dict):
        children.append(items)
    elif isinstance(items, list):
        children.extend(v for v in items if isinstance(v, dict))
    additional = node.get("additionalProperties")
    if isinstance(additional, dict):
        children.append(additional)
    for key in _UNION_KEYS:
        members = node.get(key)
        if isinstance(members, list):
            children.extend(m for m in members if isinstance(m, dict))
    return children


def _repair_node(node: dict[str, Any]) -> int:
    """Give one node a string ``type`` if it needs one (D2); return 1 if it was changed."""
    if "type" in node:
        declared = node["type"]
        if isinstance(declared, str):
            return 0
        members = [m for m in declared if isinstance(m, str)] if isinstance(declared, list) else []
        concrete = next((m for m in members if m != "null"), None)
        if concrete is None:
            # ["null"] keeps its honest "null" (a string renders); no string at all -> infer.
            node["type"] = members[0] if members else _inferred_type(node)
        else:
            if "null" in members and "nullable" not in node:
                # Keep the dropped null member as the key templates do understand.
                node["nullable"] = True
            node["type"] = concrete
        return 1
    if any(key in node for key in _SCHEMA_MARKERS):
        node["type"] = _inferred_type(node)
        return 1
    return 0


def _inferred_type(node: dict[str, Any]) -> str:
    """Structural default: object, array, first non-null union member type, else string."""
    if "properties" in node or "additionalProperties" in node:
        return "object"
    if "items" in node:
        return "array"
    for key in _UNION_KEYS:
        members = node.get(key)
        if not isinstance(members, list):
            continue
        for member in members:
            if isinstance(member, dict):
                declared = member.get("type")
                if isinstance(declared, str) and declared != "null":
                    return declared
    return "string"


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
