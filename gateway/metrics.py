"""The gateway's Prometheus metrics, served at /metrics (A1)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


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
        # The edge's connection guard (A12): what it closed, and why.
        self.connections_closed = Counter(
            "gateway_connections_closed",
            "Connections the edge closed: header_timeout, body_timeout, evicted, refused, "
            "headers_too_large",
            ["reason"],
            registry=registry,
        )
        # Read when scraped (`set_function`), never written on the hot path.
        self.open_connections = Gauge(
            "gateway_open_connections", "HTTP connections open now", registry=registry
        )
        self.model_list_failures = Counter(
            "gateway_model_list_failures",
            "/v1/models answers that failed because the registry did not answer (A17)",
            ["code"],
            registry=registry,
        )
