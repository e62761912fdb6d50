"""F4 and F8: the pure validator of everything a provider reports (`provider_input`).

Every field, every bound: text formats (CR/LF, control characters, spaces, non-ASCII,
length caps), counts (models, loads), numbers (negative, NaN, infinite, huge), and that
what is handed on is a fresh copy holding known fields only.
"""

from __future__ import annotations

import math

import pytest

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.link import is_label, is_name
from dispatcher_svc.config import LinkLimits
from dispatcher_svc.provider_input import (
    MAX_USAGE_TOKENS,
    InputRefused,
    ReportBudget,
    check_models,
    check_register,
    chunk_refusal,
    clamp_error,
    clamp_loads,
    clamp_usage,
)

LIMITS = LinkLimits()
KEY = b"k" * 32
MODEL = "hedgerow-sim-1"

# Text that must never reach a response header or a log line as is.
HOSTILE_TEXT = {
    "crlf": "p1\r\nX-Injected: yes",
    "lf": "p1\nx",
    "cr": "p1\rx",
    "nul": "p1\x00",
    "tab": "p1\tx",
    "esc": "p1\x1b[31m",
    "del": "p1\x7f",
    "non-ascii": "p\u00e9",
    "rtl-override": "p1\u202e",
    "space": "p 1",
}


def register(**fields: object) -> link_pb2.Register:
    values: dict[str, object] = dict(
        provider_id="p1",
        version="0.7.0",
        hardware="NVIDIA RTX 4090",
        public_key=KEY,
        models=[common_pb2.ModelInfo(id=MODEL, max_concurrency=4)],
        decode_tps=50.0,
        prefill_tps=500.0,
    )
    values.update(fields)
    return link_pb2.Register(**values)  # type: ignore[arg-type]


def refused(call: object) -> str:
    assert callable(call)
    with pytest.raises(InputRefused) as info:
        call()
    return info.value.reason


# --- text formats (contract.link) -----------------------------------------------------


def test_f4_names_are_printable_ascii_without_spaces_within_their_cap() -> None:
    assert is_name("a", 1) and is_name("!~", 2) and is_name("org/model:8b-q4_K_M", 64)
    assert not is_name("ab", 1)
    assert not is_name("", 5)
    assert is_name("", 5, required=False)
    for text in HOSTILE_TEXT.values():
        assert not is_name(text, 100), repr(text)


def test_f4_labels_allow_spaces_but_no_control_or_non_ascii() -> None:
    assert is_label("NVIDIA RTX 4090", 20) and is_label("", 0)
    assert not is_label("x" * 21, 20)
    for name, text in HOSTILE_TEXT.items():
        assert is_label(text, 100) == (name == "space"), name


# --- Register ---------------------------------------------------------------------------


def test_f4_a_valid_register_becomes_a_profile() -> None:
    profile = check_register(register(), LIMITS)
    assert (profile.provider_id, profile.version, profile.hardware) == (
        "p1",
        "0.7.0",
        "NVIDIA RTX 4090",
    )
    assert profile.public_key == KEY
    assert [m.id for m in profile.models] == [MODEL]
    assert (profile.decode_tps, profile.prefill_tps) == (50.0, 500.0)


@pytest.mark.parametrize("name", list(HOSTILE_TEXT))
def test_f4_provider_id_with_crlf_or_control_characters_is_refused(name: str) -> None:
    reason = refused(lambda: check_register(register(provider_id=HOSTILE_TEXT[name]), LIMITS))
    assert "provider_id" in reason


@pytest.mark.parametrize("name", list(HOSTILE_TEXT))
def test_f4_version_with_crlf_or_control_characters_is_refused(name: str) -> None:
    reason = refused(lambda: check_register(register(version=HOSTILE_TEXT[name]), LIMITS))
    assert "version" in reason


@pytest.mark.parametrize("name", [n for n in HOSTILE_TEXT if n != "space"])
def test_f4_hardware_with_control_characters_is_refused(name: str) -> None:
    reason = refused(lambda: check_register(register(hardware=HOSTILE_TEXT[name]), LIMITS))
    assert "hardware" in reason


@pytest.mark.parametrize(
    ("field", "cap"),
    [
        ("provider_id", LIMITS.max_provider_id_chars),
        ("version", LIMITS.max_version_chars),
        ("hardware", LIMITS.max_hardware_chars),
    ],
)
def test_f4_text_fields_are_capped_in_length(field: str, cap: int) -> None:
    assert getattr(check_register(register(**{field: "v" * cap}), LIMITS), field) == "v" * cap
    reason = refused(lambda: check_register(register(**{field: "v" * (cap + 1)}), LIMITS))
    assert field in reason and str(cap) in reason


def test_f4_text_caps_are_settings() -> None:
    small = LinkLimits(max_provider_id_chars=4, max_version_chars=2, max_hardware_chars=0)
    assert check_register(register(provider_id="abcd", version="v1", hardware=""), small)
    refused(lambda: check_register(register(provider_id="abcde", hardware=""), small))
    refused(lambda: check_register(register(provider_id="abcd", version="v12", hardware=""), small))
    refused(lambda: check_register(register(provider_id="abcd", version="", hardware="x"), small))


def test_f4_empty_provider_id_is_refused_but_empty_version_and_hardware_are_not() -> None:
    refused(lambda: check_register(register(provider_id=""), LIMITS))
    profile = check_register(register(version="", hardware=""), LIMITS)
    assert profile.version == "" and profile.hardware == ""


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_f4_public_key_must_be_32_bytes(size: int) -> None:
    assert "public_key" in refused(lambda: check_register(register(public_key=b"k" * size), LIMITS))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (-1.0, 0.0),
        (-1e308, 0.0),
        (math.nan, 0.0),
        (-math.inf, 0.0),
        (0.0, 0.0),
        (123.5, 123.5),
        (1e9, None),
        (math.inf, None),
    ],
)
def test_f4_advertised_speeds_are_clamped(given: float, expected: float | None) -> None:
    profile = check_register(register(decode_tps=given, prefill_tps=given), LIMITS)
    assert profile.decode_tps == (LIMITS.max_decode_tps if expected is None else expected)
    assert profile.prefill_tps == (LIMITS.max_prefill_tps if expected is None else expected)


# --- models (Register and ModelsUpdate) ------------------------------------------------


def models(*ids: str, concurrency: int = 4) -> list[common_pb2.ModelInfo]:
    return [common_pb2.ModelInfo(id=i, max_concurrency=concurrency) for i in ids]


def test_f4_model_count_is_capped() -> None:
    cap = LIMITS.max_models_per_provider
    assert len(check_models(models(*(f"m{n}" for n in range(cap))), LIMITS)) == cap
    reason = refused(lambda: check_models(models(*(f"m{n}" for n in range(cap + 1))), LIMITS))
    assert str(cap) in reason
    huge = models(*(f"m{n}" for n in range(100_000)))
    assert str(cap) in refused(lambda: check_register(register(models=huge), LIMITS))


@pytest.mark.parametrize("name", list(HOSTILE_TEXT))
def test_f4_model_ids_outside_the_format_are_refused(name: str) -> None:
    reason = refused(lambda: check_models(models(MODEL, HOSTILE_TEXT[name]), LIMITS))
    assert reason.startswith("model #1")


def test_f4_model_ids_are_required_capped_and_unique() -> None:
    cap = LIMITS.max_model_id_chars
    assert check_models(models("m" * cap), LIMITS)[0].id == "m" * cap
    refused(lambda: check_models(models("m" * (cap + 1)), LIMITS))
    refused(lambda: check_models(models(""), LIMITS))
    assert "duplicate" in refused(lambda: check_models(models(MODEL, "x", MODEL), LIMITS))


@pytest.mark.parametrize(
    ("given", "expected"),
    [(-5, 1), (0, 1), (1, 1), (4, 4), (256, 256), (257, 256), (2**31 - 1, 256)],
)
def test_f4_model_max_concurrency_is_clamped_to_1_through_the_cap(
    given: int, expected: int
) -> None:
    assert check_models(models(MODEL, concurrency=given), LIMITS)[0].max_concurrency == expected


def test_f4_model_copies_keep_tristate_flags_and_drop_unknown_fields() -> None:
    unset = common_pb2.ModelInfo(id="unset")
    false = common_pb2.ModelInfo(
        id="false", template_render_ok=False, cap_tools=False, cap_system=False, cap_vision=False
    )
    true = common_pb2.ModelInfo(id="true", is_vision=True, template_render_ok=True, cap_tools=True)
    # A provider smuggling an unknown field (number 99, 1 KiB) into a model entry.
    smuggled = common_pb2.ModelInfo.FromString(
        common_pb2.ModelInfo(id="smuggled").SerializeToString() + b"\x9a\x06\x80\x08" + b"x" * 1024
    )
    assert len(smuggled.SerializeToString()) > 1024
    out = {m.id: m for m in check_models([unset, false, true, smuggled], LIMITS)}
    for flag in ("template_render_ok", "cap_system", "cap_tools", "cap_vision"):
        assert not out["unset"].HasField(flag)
        assert out["false"].HasField(flag) and getattr(out["false"], flag) is False
    assert out["true"].is_vision and out["true"].template_render_ok and out["true"].cap_tools
    assert not out["true"].HasField("cap_vision")
    assert len(out["smuggled"].SerializeToString()) < 32, "unknown fields never travel on"


# --- heartbeats -------------------------------------------------------------------------


def load(
    model: str = MODEL, running: int = 0, waiting: int = 0, limit: int = 0
) -> link_pb2.ModelLoad:
    return link_pb2.ModelLoad(model=model, running=running, waiting=waiting, max_concurrency=limit)


def test_f4_negative_running_and_waiting_are_clamped_to_zero() -> None:
    """The issue's capture: a heartbeat reporting waiting=-1000 made one provider win 120 of
    120 requests. The registry must see 0."""
    out = clamp_loads([load(running=-7, waiting=-1000)], {MODEL}, LIMITS)
    assert [(x.running, x.waiting) for x in out] == [(0, 0)]
    most = -(2**31)
    out = clamp_loads([load(running=most, waiting=most)], {MODEL}, LIMITS)
    assert [(x.running, x.waiting) for x in out] == [(0, 0)]


def test_f4_running_waiting_and_limit_are_bounded_above() -> None:
    big = 2**31 - 1
    (out,) = clamp_loads([load(running=big, waiting=big, limit=big)], {MODEL}, LIMITS)
    assert out.running == LIMITS.max_model_concurrency
    assert out.waiting == LIMITS.max_reported_waiting
    assert out.max_concurrency == LIMITS.max_model_concurrency
    (out,) = clamp_loads([load(running=3, waiting=5, limit=2)], {MODEL}, LIMITS)
    assert (out.running, out.waiting, out.max_concurrency) == (3, 5, 2)


@pytest.mark.parametrize(("given", "expected"), [(0, 0), (-1, 1), (-(2**31), 1), (1, 1)])
def test_f4_heartbeat_limit_zero_means_unchanged_and_negative_is_one(
    given: int, expected: int
) -> None:
    (out,) = clamp_loads([load(limit=given)], {MODEL}, LIMITS)
    assert out.max_concurrency == expected


def test_f4_loads_for_models_the_provider_did_not_register_are_ignored() -> None:
    out = clamp_loads(
        [load("other", running=1), load(MODEL, running=2), load(MODEL, running=3)], {MODEL}, LIMITS
    )
    assert [(x.model, x.running) for x in out] == [(MODEL, 2)], "first entry per model only"
    assert clamp_loads([load("x" * 10_000)], {MODEL}, LIMITS) == []


def test_f4_a_heartbeat_with_more_loads_than_the_model_cap_is_refused() -> None:
    cap = LIMITS.max_models_per_provider
    assert clamp_loads([load()] * cap, {MODEL}, LIMITS)
    reason = refused(lambda: clamp_loads([load()] * (cap + 1), {MODEL}, LIMITS))
    assert str(cap) in reason
    refused(lambda: clamp_loads([load(f"m{n}") for n in range(100_000)], {MODEL}, LIMITS))


def test_f4_clamped_loads_are_fresh_messages() -> None:
    original = load(running=-1)
    (out,) = clamp_loads([original], {MODEL}, LIMITS)
    out.running = 99
    assert original.running == -1


# --- report budget ----------------------------------------------------------------------


def test_f4_report_budget_allows_a_burst_then_the_rate() -> None:
    budget = ReportBudget(rate_per_s=2.0, burst=3, now=0.0)
    assert [budget.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert not budget.allow(0.4)
    assert budget.allow(0.5) and not budget.allow(0.5)
    # A flood of 100 reports over one second, long after: the burst, then the rate.
    assert sum(budget.allow(10.0 + n / 100) for n in range(100)) == 3 + 1


# --- attempt frames: errors, usage, chunks ----------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [(0, 502), (-1, 502), (200, 502), (399, 502), (400, 400), (503, 503), (599, 599), (600, 502)],
)
def test_f4_provider_error_status_is_an_http_error_or_502(given: int, expected: int) -> None:
    assert clamp_error(given, "x", LIMITS)[0] == expected


def test_f4_provider_error_message_is_capped_and_printable() -> None:
    _, text = clamp_error(500, "boom\r\n\x1b[31mred\x00" + "y" * 5000, LIMITS)
    assert len(text) == LIMITS.max_error_chars
    assert text.startswith("boom  ") and text.isprintable()
    assert clamp_error(500, "model caf\u00e9 is cold", LIMITS)[1] == "model caf\u00e9 is cold"


def test_f4_usage_is_clamped_and_its_total_recomputed() -> None:
    usage = clamp_usage(
        common_pb2.Usage(prompt_tokens=-5, completion_tokens=2**62, total_tokens=-(2**63))
    )
    assert (usage.prompt_tokens, usage.completion_tokens) == (0, MAX_USAGE_TOKENS)
    assert usage.total_tokens == MAX_USAGE_TOKENS
    usage = clamp_usage(common_pb2.Usage(prompt_tokens=3, completion_tokens=4, total_tokens=1))
    assert usage.total_tokens == 7


def test_f8_chunk_frames_are_capped_by_plaintext_size() -> None:
    cap = 1024
    overhead = 40
    assert chunk_refusal([b"x" * (cap + overhead)], cap) is None
    assert chunk_refusal([b"x" * (cap + overhead + 1)], cap) is not None
    # The frame's total counts too: two chunks that each fit but not together.
    half = b"x" * (cap // 2 + overhead)
    assert chunk_refusal([half, half], cap) is None
    assert chunk_refusal([half, half, b"x" * (overhead + 1)], cap) is not None
    assert chunk_refusal([], cap) is None and chunk_refusal([b""], cap) is None
