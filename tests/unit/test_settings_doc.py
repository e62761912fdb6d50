"""docs/settings.md names every `HEDGEROW_*` variable the code reads, and only those."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "gateway",
    "normalizer_svc",
    "registry_svc",
    "dispatcher_svc",
    "provider_agent",
    "svckit",
    "contract",
    "stack",
)
# A full name: not a prefix someone builds names from (the CLI's help text names the family).
NAME = re.compile(r"HEDGEROW_[A-Z0-9_]*[A-Z0-9]\b")


def _names_in_code() -> set[str]:
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names |= set(NAME.findall(path.read_text()))
    return names


def test_every_setting_the_code_reads_is_documented_and_no_other() -> None:
    documented = set(NAME.findall((ROOT / "docs" / "settings.md").read_text()))
    in_code = _names_in_code()
    assert in_code, "no settings found in code"
    assert sorted(in_code - documented) == [], "undocumented settings"
    assert sorted(documented - in_code) == [], "documented settings the code does not read"
