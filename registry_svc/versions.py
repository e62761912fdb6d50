"""Provider binary versions (rule C3); the tools version floor is a gate
(``eligibility``), where a missing version (``is_missing``) always fails it.

Versions compare numerically by dot segments: a leading ``v`` is stripped, missing or
unparseable segments count as 0 (``0.6 == 0.6.0``, ``0.6.10 > 0.6.3``), and a pre-release
suffix sorts before its release (``0.6.3-rc1 < 0.6.3``). Build metadata after ``+`` is
ignored. Parsing never raises: garbage parses as version 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_NUMBER = re.compile(r"\d+")
_RUNS = re.compile(r"\d+|\D+")

# One element of a pre-release key: numbers sort before words and numerically among
# themselves, so "rc2" < "rc10".
_PreKey = tuple[tuple[int, int, str], ...]


def _pre_key(text: str) -> _PreKey:
    return tuple((0, int(run), "") if run.isdigit() else (1, 0, run) for run in _RUNS.findall(text))


@dataclass(frozen=True, slots=True, order=False)
class Version:
    """A parsed version; ``text`` is the input as given, ``key`` the total order."""

    text: str
    key: tuple[tuple[int, ...], int, _PreKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", _parse_key(self.text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __le__(self, other: Version) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Version) -> bool:
        return self.key > other.key

    def __ge__(self, other: Version) -> bool:
        return self.key >= other.key

    def __str__(self) -> str:
        return self.text


def _parse_key(text: str) -> tuple[tuple[int, ...], int, _PreKey]:
    s = text.strip()
    if s[:1] in ("v", "V"):
        s = s[1:]
    s = s.split("+", 1)[0]
    main, dash, pre = s.partition("-")
    numbers: list[int] = []
    for segment in main.split("."):
        digits = _NUMBER.match(segment)
        if digits is None:
            numbers.append(0)
            continue
        numbers.append(int(digits.group()))
        rest = segment[digits.end() :]
        if rest and not dash:
            # "0.6.3rc1": letters glued to a number start a pre-release, like "-rc1".
            pre, dash = rest, "-"
            break
    while numbers and numbers[-1] == 0:
        numbers.pop()
    # A release (1) sorts after any pre-release (0) of the same numbers.
    return (tuple(numbers), 0 if dash else 1, _pre_key(pre) if dash else ())


def is_missing(version: str | None) -> bool:
    """True when no version was reported at all (``None`` or blank)."""
    return version is None or not version.strip()
