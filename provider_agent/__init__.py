"""Hedgerow provider agent: joins the fleet over a WebSocket and serves requests with an engine."""

__version__ = "0.7.0"
