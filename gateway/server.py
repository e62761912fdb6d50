"""Running the gateway: uvicorn serving `gateway.app` through the edge's protocol (A12),
with an access log that never records a query string (A15) and a file limit that fits the
connection limit."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import resource
from collections.abc import Callable

import uvicorn

from gateway.app import Edge, create_app
from gateway.config import GatewayConfig
from gateway.protocol import edge_protocol

log = logging.getLogger(__name__)

# Descriptors the gateway needs besides client connections: the listening socket, gRPC
# channels, logs, the event loop's own.
FD_HEADROOM = 128


class PathOnlyAccessLog(logging.Filter):
    """uvicorn's access line with the path only (A15): a query string may hold what a user
    put there by mistake (an API key), and nothing of ours reads one. Whatever argument of
    the line holds a `?` is cut there, so the filter does not depend on their order."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "?" in a for a in args):
            record.args = tuple(a.split("?", 1)[0] if isinstance(a, str) else a for a in args)
        return True


def fit_file_limit(
    wanted: int,
    getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
    setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> int:
    """The connection limit the process can keep: the soft file limit is raised (up to the
    hard one) to `wanted` + FD_HEADROOM; if it cannot reach that, the connection limit
    shrinks to fit, so connections are refused by us (a 503) before `accept` fails for
    everyone (EMFILE)."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if raised > soft:
            try:
                setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                soft = raised
            except (ValueError, OSError):
                pass  # keep the soft limit we have; the connection limit shrinks below
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FD_HEADROOM))


def uvicorn_config(config: GatewayConfig, app: Edge) -> uvicorn.Config:
    """uvicorn's settings for `app`: the edge's protocol over `app.guard`, counting what it
    closes in `app.metrics`; the access log cut to paths (A15); no WebSocket."""
    closed = app.metrics.connections_closed
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, PathOnlyAccessLog) for f in access.filters):
        access.addFilter(PathOnlyAccessLog())
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_config=None,
        log_level=config.log_level,
        loop="uvloop",
        http=edge_protocol(app.guard, lambda reason: closed.labels(reason.value).inc()),
        ws="none",  # no WebSocket here: an Upgrade header gets plain HTTP
        timeout_graceful_shutdown=5,
    )


def run(config: GatewayConfig) -> None:
    """Serve until SIGINT/SIGTERM."""
    fitted = fit_file_limit(config.max_connections)
    if fitted < config.max_connections:
        log.warning(
            "file limit too low for HEDGEROW_MAX_CONNECTIONS; using a lower limit",
            extra={"max_connections": fitted},
        )
        config = dataclasses.replace(config, max_connections=fitted)
    server = uvicorn.Server(uvicorn_config(config, create_app(config)))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:  # could not bind, or the lifespan failed: as `uvicorn.run` does
        raise SystemExit(3)
