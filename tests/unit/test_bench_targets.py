"""bench/REPORT.md states, per run, whether issue 9's targets were met: checked from the
run's own rows, so a regression shows up as NOT met in the next report."""

from __future__ import annotations

from bench.run import Row, report, targets

NAN = float("nan")


def rows(*, added_p50: float, relay: float, hedged_p99: float, extra: float) -> list[Row]:
    return [
        Row("1. time to first content, c=1", "p50 (added)", 0.2, 0.2 + added_p50, "ms"),
        Row("1. time to first content, c=1", "p99 (added)", 0.3, 5.0, "ms"),
        Row("2. saturation, 256-token streams, c=16", "chunks relayed/s", 9e4, relay, "chunks/s"),
        Row("3. failover (1 of 2 providers dies before content)", "retried p50", 5, 12, "ms"),
        Row("4. hedging (10% providers 20x slower)", "p99 ttfc", 500.0, hedged_p99, "ms"),
        Row("4. hedging (10% providers 20x slower)", "extra dispatches", 0.0, extra, "%"),
    ]


def test_every_target_met() -> None:
    checks = targets(rows(added_p50=2.5, relay=20_000, hedged_p99=90, extra=10))
    assert [ok for ok, _ in checks] == [True] * 5
    assert "- met: relay 20,000 chunks/s" in report(
        rows(added_p50=2.5, relay=2e4, hedged_p99=90, extra=10), 1
    )


def test_each_miss_is_reported() -> None:
    checks = targets(rows(added_p50=3.2, relay=9_000, hedged_p99=120, extra=10))
    # p50 added, p99 added, relay, failover, hedging
    assert [ok for ok, _ in checks] == [False, True, False, True, False]
    assert "NOT met: added time to first content at c=1, p50 3.20 ms" in report(
        rows(added_p50=3.2, relay=9_000, hedged_p99=120, extra=10), 1
    )
    too_costly = targets(rows(added_p50=1, relay=2e4, hedged_p99=90, extra=16))
    assert not too_costly[-1][0], "5x lower is not enough at more than 15 % extra"


def test_targets_of_scenarios_that_did_not_run_are_left_out() -> None:
    assert targets([]) == []
    assert "Targets" not in report([], 1)
