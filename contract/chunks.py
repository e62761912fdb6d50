"""Pre-commit chunk classifier (rule B1).

A chunk is *boilerplate* when it carries nothing the client could see as output: a role-only
chat delta, an empty legacy-completions text, or a Responses lifecycle event. The dispatcher
holds boilerplate and commits on the first chunk that is not boilerplate, so a provider that
dies after its preamble can still be failed over invisibly.

The decision is made on parsed values, never on substrings or on the set of keys present:
engines differ in which keys they send empty (SGLang `reasoning_content: null`, vLLM
`content: null`, Ollama/MLX put the role on the first-token chunk, some put `usage` on the
role chunk). When in doubt the answer is "content": committing early only costs the
invisible failover, while holding real output would delay it.
"""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["is_boilerplate"]

# Responses API lifecycle events that precede any output.
_LIFECYCLE_TYPES: Final = frozenset({"response.created", "response.in_progress"})

# Choice-level fields that hold output (chat `delta`, a full `message`, legacy `text`).
# Other choice-level fields (`index`, `logprobs`, `stop_reason`, `matched_stop`...) are
# metadata and never make a chunk content, like `usage` at the top level.
_DELTA_FIELDS: Final = ("delta", "message")


def is_boilerplate(payload: bytes) -> bool:
    """Return True when `payload` (one provider chunk, UTF-8 JSON) is boilerplate per B1.

    Boilerplate:
      * a chat / legacy-completions chunk with at least one choice, where no choice has a
        `finish_reason` and no `delta` (or `message`) key other than `role` has a value, and
        no legacy `text` is non-empty -- null, "", [] and {} are "no value";
      * a Responses event whose parsed `type` is `response.created` or
        `response.in_progress` (and which has no `choices`).

    Everything else is content: any output field with a value (text, reasoning, refusal,
    tool calls -- even a first tool delta with empty arguments -- unknown delta keys), a
    finish chunk, empty or missing `choices`, `[DONE]`, non-object JSON, invalid UTF-8 or
    unparseable text. Top-level `usage`, `obfuscation` and other extras, and choice-level
    `logprobs`, never make a chunk content. Pure, never raises.
    """
    # A JSON object is the only thing that can be boilerplate, and JSON allows only these
    # four whitespace bytes before it, so this cheap test can never misclassify: it just
    # skips the parse for `[DONE]` and other non-object text.
    if not payload.lstrip(b" \t\r\n").startswith(b"{"):
        return False
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    if not isinstance(obj, dict):
        return False
    if "choices" in obj:
        return _choices_are_boilerplate(obj["choices"])
    kind = obj.get("type")
    return isinstance(kind, str) and kind in _LIFECYCLE_TYPES


def _choices_are_boilerplate(choices: Any) -> bool:
    # A missing/empty/non-list `choices` is the usage-only tail or something unknown: content.
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            return False
        if _has_value(choice.get("finish_reason")) or _has_value(choice.get("text")):
            return False
        for field in _DELTA_FIELDS:
            delta = choice.get(field)
            if isinstance(delta, dict):
                for key, value in delta.items():
                    if key != "role" and _has_value(value):
                        return False
            elif _has_value(delta):
                # A delta that is not an object but holds something: unknown shape, content.
                return False
    return True


def _has_value(value: Any) -> bool:
    """B1's notion of a value: anything but null, "", [] and {} (0 and false are values)."""
    if value is None:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True
