"""The HTTP edge's wiring: which path goes where (A1), the app's lifespan, and the answers
outside the inference pipeline (health, metrics, 404/405, bugs).

The inference pipeline itself is `gateway.pipeline`; the answer after commit is
`gateway.relay`; /v1/models and /readyz are `gateway.catalog`'s; the connection limits
under all of it are `gateway.limits`' (wired into uvicorn by `gateway.server`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from contract.errors import ErrorCode
from gateway import catalog
from gateway.backends import Backends
from gateway.config import GatewayConfig
from gateway.dialects.base import Dialect
from gateway.dialects.registry import CHAT, COMPLETIONS, MESSAGES, RESPONSES
from gateway.errors import ApiError, error_body_for_path, error_response
from gateway.limits import ConnectionGuard
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Gateway, internal_error
from gateway.protocol import EdgeProtocolBase


class Edge:
    """What uvicorn serves. The inference endpoints (POST) go straight to the pipeline, a
    plain ASGI call: FastAPI's routing, dependency and middleware layers cost a fifth of a
    millisecond per request on the hot path and do nothing for it. Everything else (the
    same paths' other methods, /v1/models, health, metrics, 404s, lifespan) is the
    FastAPI app's.

    `guard` is the connection guard the server's protocol reports to (A12), `metrics` the
    app's counters."""

    def __init__(
        self,
        app: FastAPI,
        state: dict[str, Gateway],
        routes: Mapping[str, Dialect],
        guard: ConnectionGuard[EdgeProtocolBase],
        metrics: GatewayMetrics,
    ) -> None:
        self.app = app
        self._state = state
        self._routes = routes
        self.guard = guard
        self.metrics = metrics

    @property
    def gateway(self) -> Gateway | None:
        """The pipeline, once the lifespan has started it."""
        return self._state.get("gw")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            dialect = self._routes.get(scope["path"])
            gw = self._state.get("gw")
            if dialect is not None and gw is not None:
                await gw.serve(scope, receive, send, dialect)
                return
        await self.app(scope, receive, send)


ROUTES: Mapping[str, Dialect] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETIONS,
    "/v1/responses": RESPONSES,
    "/v1/messages": MESSAGES,
}


def create_app(
    config: GatewayConfig,
    backends_factory: Callable[[GatewayConfig], Backends] = Backends.connect,
) -> Edge:
    """The gateway as an ASGI app. The backends are connected (and the pipeline built)
    when the lifespan starts, and closed when it ends."""
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    guard: ConnectionGuard[EdgeProtocolBase] = ConnectionGuard(config.edge_limits, time.monotonic)
    metrics.open_connections.set_function(lambda: guard.open_count)
    state: dict[str, Gateway] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        backends = backends_factory(config)
        state["gw"] = Gateway(config, backends, metrics)
        try:
            yield
        finally:
            await backends.close()

    app = FastAPI(
        title="Hedgerow", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    def gw() -> Gateway:
        return state["gw"]

    async def not_started(request: Request) -> Response:
        raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "the gateway is starting", retry_after_s=1)

    for path in ROUTES:
        # Served by `Edge` once started; registered so that other methods get a 405.
        app.add_api_route(path, not_started, methods=["POST"])

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return await catalog.list_models(gw(), request)

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        return await catalog.readiness(gw().backends.health)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc, error_body_for_path(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_REQUEST
        err = ApiError(code, str(exc.detail), status=exc.status_code)
        return error_response(err, error_body_for_path(request.url.path))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return internal_error(request.url.path)

    return Edge(app, state, ROUTES, guard, metrics)
