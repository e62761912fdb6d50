"""A16: every number a dialect reads or passes on is bounded; out of range (or not a finite
number of the right kind) is a 400 naming the field, in all four dialects -- never a 500,
never a value the dispatch proto or a provider cannot take."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import dispatcher_pb2
from gateway.canonical import MAX_OUTPUT_TOKENS, NUMBERS, CanonicalRequest
from gateway.dialects.base import Dialect
from gateway.dialects.registry import CHAT, COMPLETIONS, MESSAGES, RESPONSES
from gateway.errors import ApiError

MODEL = "m"
VALID: dict[str, tuple[Dialect, dict[str, Any]]] = {
    "chat": (CHAT, {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
    "completions": (COMPLETIONS, {"model": MODEL, "prompt": "x"}),
    "responses": (RESPONSES, {"model": MODEL, "input": "x"}),
    "messages": (
        MESSAGES,
        {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
    ),
}
FIELDS = [(dialect, field) for dialect, table in NUMBERS.items() for field in table]
HUGE = [2**63, 2**63 - 1 + 2**20, 2**64, 10**30, -(2**63) - 1]
NOT_NUMBERS: list[object] = ["5", True, False, [], {}, math.nan, math.inf, -math.inf]


def lower(dialect: str, **fields: object) -> CanonicalRequest:
    impl, doc = VALID[dialect]
    doc = {**doc, **fields}
    return impl.lower(doc, json.dumps(doc).encode(), 256)


def dispatch_request(req: CanonicalRequest) -> dispatcher_pb2.DispatchRequest:
    """What the pipeline builds from the lowered request (the int64 fields are checked)."""
    return dispatcher_pb2.DispatchRequest(
        model=req.model,
        body=req.body,
        prompt_tokens=req.prompt_tokens,
        max_tokens=req.max_tokens,
    )


def refused(dialect: str, field: str, value: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        lower(dialect, **{field: value})
    err = caught.value
    assert err.status == 400 and err.code.value == "invalid_request"
    assert err.param == field, f"{dialect}.{field}={value!r} blamed {err.param!r}"
    return err


@pytest.mark.parametrize(("dialect", "field"), FIELDS)
def test_a16_out_of_range_is_a_400_naming_the_field(dialect: str, field: str) -> None:
    bound = NUMBERS[dialect][field]
    for value in [bound.high + 1, bound.low - 1, *NOT_NUMBERS]:
        refused(dialect, field, value)
    for value in HUGE:
        if not bound.low <= value <= bound.high:  # seed's range is int64's
            refused(dialect, field, value)
    if bound.integer:
        refused(dialect, field, bound.low + 0.5)


@pytest.mark.parametrize(("dialect", "field"), FIELDS)
def test_a16_the_ends_of_each_range_are_accepted(dialect: str, field: str) -> None:
    bound = NUMBERS[dialect][field]
    for value in (bound.low, bound.high):
        if field in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            req = lower(dialect, **{field: value})
            assert req.max_tokens == value
            dispatch_request(req)
        else:
            lower(dialect, **{field: value})


@pytest.mark.parametrize("dialect", list(VALID))
def test_a16_max_tokens_of_2_63_is_a_400_not_a_500(dialect: str) -> None:
    field = {"responses": "max_output_tokens"}.get(dialect, "max_tokens")
    err = refused(dialect, field, 2**63)
    assert str(MAX_OUTPUT_TOKENS) in err.message


@pytest.mark.parametrize("dialect", ["chat", "completions"])
def test_a16_logit_bias_values_are_bounded(dialect: str) -> None:
    lower(dialect, logit_bias={"50256": -100, "1": 100})
    bad_biases: list[object] = [
        {"1": 101},
        {"1": math.nan},
        {"1": "x"},
        [],
        {str(i): 0 for i in range(2000)},
    ]
    for bad in bad_biases:
        refused(dialect, "logit_bias", bad)


@pytest.mark.parametrize("dialect", ["chat", "completions"])
@pytest.mark.parametrize("n", [2, 0, 2**64, 1.0, True, "1"])
def test_a16_n_must_be_the_integer_1(dialect: str, n: object) -> None:
    refused(dialect, "n", n)


numbers = (
    st.integers()
    | st.integers(min_value=2**62, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
)


@settings(max_examples=400, deadline=None)
@given(
    case=st.sampled_from(FIELDS),
    value=numbers,
    others=st.dictionaries(st.sampled_from([f for _, f in FIELDS]), numbers, max_size=3),
)
def test_a16_fuzzed_numbers_lower_or_are_a_400_naming_a_numeric_field(
    case: tuple[str, str], value: object, others: dict[str, object]
) -> None:
    dialect, field = case
    fields = {**others, field: value}
    try:
        req = lower(dialect, **fields)
    except ApiError as err:
        assert err.status == 400
        assert err.param in fields or err.param == "n"
        return
    dispatch_request(req)  # whatever lowered fits the dispatch proto
    assert 1 <= req.max_tokens <= MAX_OUTPUT_TOKENS
    for name, given_value in fields.items():
        bound = NUMBERS[dialect].get(name)
        if bound is not None:
            assert isinstance(given_value, int | float) and not isinstance(given_value, bool)
            assert bound.low <= given_value <= bound.high
