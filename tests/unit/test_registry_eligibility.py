"""C1/C2/C7: the one gate and its reasons; the A6 capability checks and the A7
classification read from them (``admission``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry_svc.admission import Availability, classify, passes_capability
from registry_svc.eligibility import GateRequest, Reason, ReasonCode, eligible_now, gate, is_live
from registry_svc.model import ModelInfo, Provider, Shape, Traits
from registry_svc.versions import Version
from tests.fakes.registry import model, provider

NOW = 1000.0
FLOOR = Version("0.6.3")
TOOLS = Traits(has_tools=True)
VISION = Traits(requires_vision=True)
BASE = Traits()
ALL_TRAITS = [BASE, TOOLS, VISION, Traits(has_tools=True, requires_vision=True)]


def req(traits: Traits = BASE, **kwargs: object) -> GateRequest:
    kwargs.setdefault("stale_after_s", 15.0)
    return GateRequest("m", traits, NOW, FLOOR, **kwargs)  # type: ignore[arg-type]


def codes(
    p: Provider, r: GateRequest, *, in_use: int = 0, cooling_until: float | None = None
) -> set[ReasonCode]:
    return {x.code for x in gate(p, r, in_use=in_use, cooling_until=cooling_until)}


def fresh(p: Provider) -> Provider:
    from dataclasses import replace

    return replace(p, last_seen=NOW)


def test_c1_healthy_provider_is_eligible_for_every_shape() -> None:
    p = fresh(provider("p1", models={"m": model(is_vision=True)}))
    for traits in ALL_TRAITS:
        assert gate(p, req(traits), in_use=0, cooling_until=None) == []


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"online": False}, ReasonCode.OFFLINE),
        ({"trusted": False}, ReasonCode.UNTRUSTED),
        ({"models": {"other": ModelInfo("other")}}, ReasonCode.MODEL_NOT_SERVED),
    ],
)
def test_c7_provider_state_reasons(kwargs: dict[str, object], expected: ReasonCode) -> None:
    p = fresh(provider("p1", **kwargs))  # type: ignore[arg-type]
    assert codes(p, req()) == {expected}


def test_c1_silent_provider_counts_as_offline() -> None:
    from dataclasses import replace

    p = replace(provider("p1"), last_seen=NOW - 15.5)
    assert codes(p, req()) == {ReasonCode.OFFLINE}
    assert codes(p, req(stale_after_s=None)) == set()
    assert codes(replace(p, last_seen=NOW - 15), req()) == set()


@pytest.mark.parametrize(
    ("online", "trusted", "silent_s", "live"),
    [
        (True, True, 15.0, True),
        (True, True, 15.5, False),
        (False, True, 0.0, False),
        (True, False, 0.0, False),
    ],
)
def test_c1_is_live_is_the_gates_own_liveness(
    online: bool, trusted: bool, silent_s: float, live: bool
) -> None:
    """``is_live`` (model lists, online ids, stats) says exactly what the gate's offline
    and untrusted reasons say."""
    from dataclasses import replace

    p = replace(provider("p1", online=online, trusted=trusted), last_seen=NOW - silent_s)
    assert is_live(p, NOW, 15.0) is live
    gated = codes(p, req()) & {ReasonCode.OFFLINE, ReasonCode.UNTRUSTED}
    assert (not gated) is live


def test_c1_exclude_and_allowlist() -> None:
    p = fresh(provider("p1", serial="SER-1"))
    assert codes(p, req(exclude=frozenset({"p1"}))) == {ReasonCode.EXCLUDED}
    assert codes(p, req(allowlist=frozenset({"SER-2"}))) == {ReasonCode.NOT_IN_ALLOWLIST}
    # The allowlist names serials, not ids.
    assert codes(p, req(allowlist=frozenset({"p1"}))) == {ReasonCode.NOT_IN_ALLOWLIST}
    assert codes(p, req(allowlist=frozenset({"SER-1"}))) == set()


def test_c1_vision_requests_need_a_vision_model() -> None:
    p = fresh(provider("p1"))
    assert codes(p, req(VISION)) == {ReasonCode.NOT_VISION}
    assert codes(p, req(BASE)) == set()
    assert codes(p, req(TOOLS)) == set()


@pytest.mark.parametrize(
    ("version", "ok"),
    [("0.6.3", True), ("0.6.10", True), ("v0.6.3", True), ("0.6.2", False), ("", False)],
)
def test_c1_tools_floor_applies_to_tools_requests_only(version: str, ok: bool) -> None:
    p = fresh(provider("p1", version=version, models={"m": model(is_vision=True)}))
    assert codes(p, req(TOOLS)) == (set() if ok else {ReasonCode.BELOW_FLOOR})
    assert codes(p, req(BASE)) == set()
    assert codes(p, req(VISION)) == set()


def test_c1_missing_version_reason_says_missing() -> None:
    p = fresh(provider("p1", version=""))
    (reason,) = gate(p, req(TOOLS), in_use=0, cooling_until=None)
    assert reason.code is ReasonCode.BELOW_FLOOR
    assert "missing" in reason.detail and "0.6.3" in reason.detail


def test_c1_template_gate_fences_every_shape_for_that_model_only() -> None:
    p = fresh(
        provider(
            "p1",
            models={
                "m": model(is_vision=True, template_render_ok=False),
                "ok": model("ok", is_vision=True),
            },
        )
    )
    for traits in ALL_TRAITS:
        assert ReasonCode.TEMPLATE_BROKEN in codes(p, req(traits))
        other = GateRequest("ok", traits, NOW, FLOOR)
        assert gate(p, other, in_use=0, cooling_until=None) == []


@pytest.mark.parametrize("verdict", [None, True])
def test_c2_template_unknown_or_true_is_allowed(verdict: bool | None) -> None:
    p = fresh(
        provider(
            "p1",
            models={
                "m": model(
                    is_vision=True,
                    template_render_ok=verdict,
                    cap_tools=verdict,
                    cap_vision=verdict,
                    cap_system=False,
                )
            },
        )
    )
    for traits in ALL_TRAITS:
        assert codes(p, req(traits)) == set()


def test_c1_tools_template_false_fences_tools_only() -> None:
    p = fresh(provider("p1", models={"m": model(is_vision=True, cap_tools=False)}))
    assert codes(p, req(TOOLS)) == {ReasonCode.TOOLS_TEMPLATE_BROKEN}
    assert codes(p, req(BASE)) == set()
    assert codes(p, req(VISION)) == set()


def test_c1_vision_template_false_fences_vision_only() -> None:
    p = fresh(provider("p1", models={"m": model(is_vision=True, cap_vision=False)}))
    assert codes(p, req(VISION)) == {ReasonCode.VISION_TEMPLATE_BROKEN}
    assert codes(p, req(BASE)) == set()
    assert codes(p, req(TOOLS)) == set()


def test_c7_cooling_reason_carries_the_time() -> None:
    p = fresh(provider("p1"))
    reasons = gate(p, req(TOOLS), in_use=0, cooling_until=NOW + 120)
    assert reasons == [Reason(ReasonCode.COOLING_DOWN_UNTIL, detail="tools for 120s")]
    assert gate(p, req(TOOLS), in_use=0, cooling_until=NOW) == []


def test_c7_capacity_and_size() -> None:
    p = fresh(provider("p1", models={"m": model(max_concurrency=2, max_context_tokens=1000)}))
    assert codes(p, req(), in_use=1) == set()
    assert codes(p, req(), in_use=2) == {ReasonCode.AT_CAPACITY}
    assert codes(p, req(request_tokens=1000)) == set()
    assert codes(p, req(request_tokens=1001)) == {ReasonCode.TOO_LARGE}


def test_c7_every_reason_is_reported_at_once() -> None:
    from dataclasses import replace

    p = replace(
        provider(
            "p1",
            version="0.5",
            serial="S",
            online=False,
            trusted=False,
            models={
                "m": model(
                    template_render_ok=False,
                    cap_tools=False,
                    cap_vision=False,
                    max_context_tokens=10,
                )
            },
        ),
        last_seen=NOW,
    )
    r = req(
        Traits(has_tools=True, requires_vision=True),
        exclude=frozenset({"p1"}),
        allowlist=frozenset({"other"}),
        request_tokens=11,
    )
    assert codes(p, r, in_use=1, cooling_until=NOW + 1) == set(ReasonCode) - {
        ReasonCode.MODEL_NOT_SERVED
    }


def test_c7_model_not_served_skips_model_reasons() -> None:
    p = fresh(provider("p1", version="", models={}))
    assert codes(p, req(TOOLS), in_use=5, cooling_until=NOW + 1) == {
        ReasonCode.MODEL_NOT_SERVED,
        ReasonCode.BELOW_FLOOR,
    }


def test_a6_capability_ignores_capacity_size_and_exclusion() -> None:
    reasons = [
        Reason(ReasonCode.AT_CAPACITY),
        Reason(ReasonCode.TOO_LARGE),
        Reason(ReasonCode.EXCLUDED),
    ]
    assert passes_capability(reasons, Shape.TOOLS)
    assert passes_capability(reasons, Shape.VISION)


@pytest.mark.parametrize(
    ("code", "tools_ok", "vision_ok"),
    [
        (ReasonCode.OFFLINE, False, False),
        (ReasonCode.UNTRUSTED, False, False),
        (ReasonCode.NOT_IN_ALLOWLIST, False, False),
        (ReasonCode.TEMPLATE_BROKEN, False, False),
        (ReasonCode.COOLING_DOWN_UNTIL, False, False),
        (ReasonCode.BELOW_FLOOR, False, True),
        (ReasonCode.TOOLS_TEMPLATE_BROKEN, False, True),
        (ReasonCode.NOT_VISION, True, False),
        (ReasonCode.VISION_TEMPLATE_BROKEN, True, False),
    ],
)
def test_a6_capability_verdicts(code: ReasonCode, tools_ok: bool, vision_ok: bool) -> None:
    assert passes_capability([Reason(code)], Shape.TOOLS) is tools_ok
    assert passes_capability([Reason(code)], Shape.VISION) is vision_ok


def v(p: Provider, *reason_codes: ReasonCode) -> tuple[Provider, list[Reason]]:
    return p, [Reason(c) for c in reason_codes]


def classify_(traits: Traits, *verdicts: tuple[Provider, list[Reason]]) -> Availability:
    return classify(verdicts, traits, now=NOW, reconnect_grace_s=60)


def test_a7_classify_ladder() -> None:
    p = fresh(provider("p1"))
    gone = provider("gone", last_seen=NOW - 30)
    long_gone = provider("long", last_seen=NOW - 61)
    assert classify_(BASE) is Availability.NONE
    assert classify_(BASE, v(p)) is Availability.ELIGIBLE
    assert classify_(BASE, v(p, ReasonCode.AT_CAPACITY)) is Availability.AT_CAPACITY
    assert classify_(BASE, v(p, ReasonCode.TOO_LARGE)) is Availability.TOO_LARGE
    assert (
        classify_(BASE, v(p, ReasonCode.TOO_LARGE, ReasonCode.AT_CAPACITY))
        is Availability.TOO_LARGE
    )
    assert classify_(BASE, v(gone, ReasonCode.OFFLINE)) is Availability.RECONNECTING
    assert (
        classify_(BASE, v(gone, ReasonCode.OFFLINE, ReasonCode.AT_CAPACITY))
        is Availability.RECONNECTING
    )
    assert classify_(BASE, v(long_gone, ReasonCode.OFFLINE)) is Availability.NONE
    assert classify_(BASE, v(gone, ReasonCode.OFFLINE, ReasonCode.UNTRUSTED)) is Availability.NONE
    assert classify_(BASE, v(p, ReasonCode.COOLING_DOWN_UNTIL)) is Availability.NONE
    assert classify_(BASE, v(p, ReasonCode.EXCLUDED, ReasonCode.AT_CAPACITY)) is Availability.NONE
    # Full beats reconnecting beats too large.
    assert (
        classify_(BASE, v(gone, ReasonCode.OFFLINE), v(p, ReasonCode.AT_CAPACITY))
        is Availability.AT_CAPACITY
    )
    assert (
        classify_(BASE, v(p, ReasonCode.TOO_LARGE), v(gone, ReasonCode.OFFLINE))
        is Availability.RECONNECTING
    )


def test_a6_classify_capability_comes_before_capacity() -> None:
    p = fresh(provider("p1"))
    q = fresh(provider("q"))
    assert classify_(TOOLS, v(p, ReasonCode.BELOW_FLOOR)) is Availability.NO_TOOLS
    assert (
        classify_(TOOLS, v(p, ReasonCode.BELOW_FLOOR), v(q, ReasonCode.AT_CAPACITY))
        is Availability.AT_CAPACITY
    )
    assert classify_(VISION, v(p, ReasonCode.NOT_VISION)) is Availability.NO_VISION
    both = Traits(has_tools=True, requires_vision=True)
    assert classify_(both, v(p, ReasonCode.NOT_VISION)) is Availability.NO_VISION
    assert (
        classify_(both, v(p, ReasonCode.NOT_VISION), v(q, ReasonCode.BELOW_FLOOR))
        is Availability.NONE
    )
    # A6 asks about online providers: a reconnecting tools provider does not count.
    gone = provider("gone", last_seen=NOW - 5)
    assert classify_(TOOLS, v(gone, ReasonCode.OFFLINE)) is Availability.NO_TOOLS
    # Cooling for tools is not tools-capable (a cooled pair is not capacity).
    assert classify_(TOOLS, v(p, ReasonCode.COOLING_DOWN_UNTIL)) is Availability.NO_TOOLS


# --- eligible_now filters with gate; the record's cached part must never leak ------------

# Biased towards healthy values so that about half the generated providers are eligible
# and each rule is the deciding one often enough to catch a drift.
_mostly = st.sampled_from([True, True, True, False])
_tri = st.sampled_from([None, None, True, False])
_models = st.builds(
    ModelInfo,
    id=st.sampled_from(["m", "m", "m", "x"]),
    is_vision=_mostly,
    template_render_ok=_tri,
    cap_tools=_tri,
    cap_vision=_tri,
    max_concurrency=st.sampled_from([0, 1, 2, 3]),
    max_context_tokens=st.sampled_from([None, None, 100, 500]),
)
_providers = st.builds(
    Provider,
    id=st.sampled_from(["a", "b", "c"]),
    version=st.sampled_from(["0.6.3", "v0.7", "0.6.10", "", "0.6.2", "0.6.3-rc1", "junk"]),
    models=st.lists(_models, min_size=1, max_size=2).map(lambda ms: {m.id: m for m in ms}),
    serial=st.sampled_from(["", "S1", "S2"]),
    online=_mostly,
    trusted=_mostly,
    last_seen=st.sampled_from([NOW, NOW, NOW - 15, NOW - 15.001, NOW - 100]),
)


@settings(max_examples=300, deadline=None)
@given(
    providers=st.lists(_providers, max_size=4, unique_by=lambda p: p.id),
    exclude=st.frozensets(st.sampled_from(["a", "b", "c"]), max_size=1),
    allowlist=st.none() | st.none() | st.frozensets(st.sampled_from(["a", "S1", "S2"])),
    tokens=st.sampled_from([0, 100, 100, 101, 600]),
    stale=st.sampled_from([15.0, 15.0, None]),
    slots=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 3), max_size=1),
    cooling=st.dictionaries(
        st.sampled_from(["a", "b", "c"]), st.sampled_from([NOW, NOW + 5]), max_size=1
    ),
)
def test_c1_hot_path_agrees_with_a_fresh_gate(
    providers: list[Provider],
    exclude: frozenset[str],
    allowlist: frozenset[str] | None,
    tokens: int,
    stale: float | None,
    slots: dict[str, int],
    cooling: dict[str, float],
) -> None:
    from dataclasses import replace

    live_cooling = {k: t for k, t in cooling.items() if t > NOW}
    # Every traits and both floors over the same records: the verdict cached on a record
    # must not leak from one request kind into another. The expected verdicts come from
    # copies of the records (an empty cache each time).
    for floor in (FLOOR, Version("0.6.10")):
        for traits in ALL_TRAITS:
            r = GateRequest("m", traits, NOW, floor, exclude, allowlist, tokens, stale)
            expected = [
                (p, slots.get(p.id, 0))
                for p in providers
                if not gate(
                    replace(p), r, in_use=slots.get(p.id, 0), cooling_until=cooling.get(p.id)
                )
            ]
            assert eligible_now(providers, r, slots=slots, cooling=live_cooling) == expected
            assert eligible_now(providers, r, slots=slots, cooling=cooling) == expected
