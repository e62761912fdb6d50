"""C3 version comparison, and the tools version floor as the gate applies it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_svc.eligibility import GateRequest, ReasonCode, gate
from registry_svc.model import Provider, Traits
from registry_svc.versions import Version, is_missing
from tests.fakes.registry import provider


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``."""
    va, vb = Version(a), Version(b)
    return (va > vb) - (va < vb)


def meets_floor(version: str, floor: str) -> bool:
    """Whether the gate lets a provider at ``version`` serve a tools request (C1)."""
    p = provider("p1", version=version)
    req = GateRequest("m", Traits(has_tools=True), p.last_seen, Version(floor))
    reasons = gate(p, req, in_use=0, cooling_until=None)
    assert {r.code for r in reasons} <= {ReasonCode.BELOW_FLOOR}
    return not reasons


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("0.6.10", "0.6.3", 1),
        ("0.6.3", "0.6.10", -1),
        ("v0.6.3", "0.6.3", 0),
        ("V0.6.3", "0.6.3", 0),
        ("0.6", "0.6.0", 0),
        ("0.6.0.0", "0.6", 0),
        ("0.6.3-rc1", "0.6.3", -1),
        ("0.6.3rc1", "0.6.3", -1),
        ("0.6.3-rc2", "0.6.3-rc10", -1),
        ("0.6.3-rc1", "0.6.2", 1),
        ("0.6.3+build7", "0.6.3", 0),
        ("1.0", "0.99.99", 1),
        ("", "0", 0),
        ("", "0.0.1", -1),
        ("garbage", "0", 0),
        ("garbage", "0.6.3", -1),
        ("0.x.5", "0.0.5", 0),
        (" 0.6.4 ", "0.6.4", 0),
        ("0.7", "0.6.99", 1),
        ("10.0.0", "9.9.9", 1),
    ],
)
def test_c3_version_table(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


_versionish = st.one_of(
    st.text(max_size=12),
    st.from_regex(r"v?\d{1,3}(\.\d{1,3}){0,3}(-[a-z]{1,3}\d{0,2})?", fullmatch=True),
)


@given(_versionish, _versionish)
def test_c3_compare_is_antisymmetric(a: str, b: str) -> None:
    assert compare_versions(a, b) == -compare_versions(b, a)


@given(_versionish, _versionish, _versionish)
def test_c3_compare_is_transitive(a: str, b: str, c: str) -> None:
    if compare_versions(a, b) <= 0 and compare_versions(b, c) <= 0:
        assert compare_versions(a, c) <= 0


@given(_versionish)
def test_c3_parse_never_raises_and_equals_itself(text: str) -> None:
    assert compare_versions(text, text) == 0
    assert Version(text) == Version(text)
    assert hash(Version(text)) == hash(Version(text))


def test_c3_version_objects_order_like_compare() -> None:
    assert Version("0.6.10") > Version("0.6.3")
    assert Version("0.6.3-rc1") < Version("0.6.3")
    assert Version("0.6") == Version("0.6.0")
    assert Version("0.6.3") >= Version("v0.6.3")
    assert Version("0.6.2") <= Version("0.6.3")
    assert str(Version("v1.2")) == "v1.2"


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("0.6.3", True),
        ("v0.6.3", True),
        ("0.6.10", True),
        ("0.7", True),
        ("0.6.2", False),
        ("0.6.3-rc1", False),
        ("0.6", False),
        ("garbage", False),
        ("", False),
        ("   ", False),
    ],
)
def test_c3_tools_floor(version: str, ok: bool) -> None:
    assert meets_floor(version, "0.6.3") is ok


def test_c3_missing_version_fails_even_a_zero_floor() -> None:
    assert not meets_floor("", "0")
    assert not meets_floor(" ", "0")
    assert meets_floor("garbage", "0")  # present but unparseable: version 0 >= 0
    assert is_missing(None) and is_missing(" ") and not is_missing("0")
    assert Provider("p1", version=" ").parsed_version is None
