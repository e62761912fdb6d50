"""The dispatcher's Prometheus counters. The driver bumps them; what a released attempt
counts as is the machine's decision (`Release.outcome`), not re-derived here."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter

from dispatcher_svc.dispatch.actions import Outcome

__all__ = ["DispatchMetrics"]


class DispatchMetrics:
    # How one released attempt ended (issue 7); `sent` counts every dispatch on the way out.
    OUTCOMES: Final = tuple(outcome.value for outcome in Outcome)

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dispatches = Counter(
            "dispatcher_dispatches",
            "Provider dispatches by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in self.OUTCOMES:
            self.dispatches.labels(outcome)  # exported at 0 before the first dispatch
        self.requests = Counter(
            "dispatcher_requests", "Requests by final outcome", ["outcome"], registry=registry
        )
        self.speculative = Counter(
            "dispatcher_speculative_dispatches", "Speculative backups sent", registry=registry
        )
        self.speculative_wins = Counter(
            "dispatcher_speculative_wins", "Requests won by the backup", registry=registry
        )
        self.in_band_errors = Counter(
            "dispatcher_in_band_errors", "Errors after commit", registry=registry
        )
        self.cooldowns = Counter(
            "dispatcher_cooldowns_entered", "Breaker cooldowns entered", registry=registry
        )
