"""C3 version comparison and the tools version floor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_svc.versions import compare_versions, is_missing, meets_floor, parse_version


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
    assert parse_version(text) == parse_version(text)
    assert hash(parse_version(text)) == hash(parse_version(text))


def test_c3_version_objects_order_like_compare() -> None:
    assert parse_version("0.6.10") > parse_version("0.6.3")
    assert parse_version("0.6.3-rc1") < parse_version("0.6.3")
    assert parse_version("0.6") == parse_version("0.6.0")
    assert parse_version("0.6.3") >= parse_version("v0.6.3")
    assert parse_version("0.6.2") <= parse_version("0.6.3")
    assert str(parse_version("v1.2")) == "v1.2"


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
        (None, False),
    ],
)
def test_c3_tools_floor(version: str | None, ok: bool) -> None:
    assert meets_floor(version, "0.6.3") is ok
    assert meets_floor(version, parse_version("0.6.3")) is ok


def test_c3_missing_version_fails_even_a_zero_floor() -> None:
    assert not meets_floor("", "0")
    assert not meets_floor(None, "0")
    assert meets_floor("garbage", "0")  # present but unparseable: version 0 >= 0
    assert is_missing(None) and is_missing(" ") and not is_missing("0")
