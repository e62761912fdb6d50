"""The gateway's Prometheus metrics, served at /metrics (A1)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class GatewayMetrics:
    """Every counter the gateway keeps, on the app's own registry (no global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gateway_requests",
            "Inference requests by endpoint and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.normalize_fallbacks = Counter(
            "gateway_normalize_fallbacks",
            "Bodies sent on unrepaired because the normalizer failed",
            registry=registry,
        )
        # Incremented only by `gateway.relay.Relay`.
        self.in_band_errors = Counter(
            "gateway_in_band_errors",
            "Errors surfaced after commit",
            ["endpoint"],
            registry=registry,
        )
