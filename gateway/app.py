"""The HTTP edge: auth, body limits, normalization, admission, dispatch, rendering (A1-A9)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from contract import dispatcher_pb2, hedgerow_common_pb2, normalizer_pb2, registry_pb2
from contract.errors import ErrorCode, Failure
from gateway.backends import Backends
from gateway.canonical import CanonicalRequest
from gateway.config import GatewayConfig
from gateway.dialects.base import Dialect, StreamRenderer
from gateway.dialects.deltas import BadChunk
from gateway.dialects.registry import CHAT, COMPLETIONS, MESSAGES, RESPONSES
from gateway.errors import ApiError, bad_request, error_body_for_path, error_response
from gateway.mux import DispatcherUnavailable, MuxCall
from gateway.ratelimit import Limit, RateLimiter, parse_limits

log = logging.getLogger(__name__)
T = TypeVar("T")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class GatewayMetrics:
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
        self.in_band_errors = Counter(
            "gateway_in_band_errors",
            "Errors surfaced after commit",
            ["endpoint"],
            registry=registry,
        )


@dataclass
class Timing:
    started: float = field(default_factory=time.perf_counter)
    parse_us: int = 0
    normalize_us: int = 0

    def lap(self) -> int:
        now = time.perf_counter()
        elapsed = int((now - self.started) * 1e6)
        self.started = now
        return elapsed


class ClientGone(Exception):
    """The client disconnected before anything was written."""


class DispatchEvents:
    """The dispatcher's events for one request. They arrive one message per dispatch step
    (Committed with the held chunks, the last chunks with Completed); `next()` hands them
    out one at a time, `batch()` everything the current message still holds."""

    def __init__(self, call: MuxCall) -> None:
        self.call = call
        self._pending: deque[dispatcher_pb2.DispatchEvent] = deque()

    async def next(self, *, committed: bool) -> dispatcher_pb2.DispatchEvent:
        if not self._pending:
            self._pending.extend(await self._receive(committed))
        return self._pending.popleft()

    async def batch(self, *, committed: bool) -> list[dispatcher_pb2.DispatchEvent]:
        if self._pending:
            events = list(self._pending)
            self._pending.clear()
            return events
        return await self._receive(committed)

    async def _receive(self, committed: bool) -> list[dispatcher_pb2.DispatchEvent]:
        """The next message's events (never empty); a broken or ended stream is told as
        the event the gateway would have answered with (A8: 503 before commit, an in-band
        502 after it)."""
        try:
            message = await self.call.read()
        except DispatcherUnavailable as exc:
            raise ApiError(
                ErrorCode.SERVICE_UNAVAILABLE, "dispatcher unavailable", retry_after_s=2
            ) from exc
        if message is None or not message.events:
            if committed:
                ended = Failure(ErrorCode.PROVIDER_ERROR, "dispatch ended")
                return [dispatcher_pb2.DispatchEvent(stream_error=ended.to_proto())]
            failed = Failure(ErrorCode.SERVICE_UNAVAILABLE, "dispatch ended without an answer")
            return [dispatcher_pb2.DispatchEvent(failed=failed.to_proto())]
        return list(message.events)


async def _client_gone(receive: Receive) -> None:
    """Returns when the client disconnects (the body has been read already)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_client_gone(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Run `work` in this task, but give up (ClientGone) as soon as the client hangs up:
    uvicorn does not cancel a handler whose client left, and the dispatch would hold its
    slots (B12). The caller cancels the dispatch call.

    A watcher task cancels this one when the disconnect arrives; that cancellation (and
    only that one) becomes ClientGone, as `asyncio.timeout` does with its own."""
    task = asyncio.current_task()
    assert task is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await _client_gone(receive)
        left = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left and task.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


class EventStream(Response):
    """A server-sent event stream that stops (and closes its source, cancelling the
    dispatch) the moment the client hangs up (B12). What Starlette's StreamingResponse
    sends, without a task group per request."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self.body_iterator = body
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # aclosing: a stream stopped early still runs the source's cleanup now.
        async with contextlib.aclosing(self.body_iterator) as body:  # type: ignore[type-var]
            # The first events came with Committed: they go out right behind the head,
            # before the client-gone watch is set up for the rest.
            first = await anext(body, None)
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if first is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send({"type": "http.response.body", "body": first, "more_body": True})
            with contextlib.suppress(ClientGone):
                await _unless_client_gone(receive, self._pump(body, send))

    @staticmethod
    async def _pump(body: AsyncIterator[bytes], send: Send) -> None:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _internal_error(path: str) -> Response:
    """A bug of ours: logged with its traceback (call while handling it), told as a 500."""
    log.exception("unhandled error", extra={"path": path})
    err = ApiError(ErrorCode.INTERNAL_ERROR, "internal error")
    return error_response(err, error_body_for_path(path))


def _too_large(cap: int) -> ApiError:
    return ApiError(ErrorCode.REQUEST_TOO_LARGE, f"request body exceeds {cap} bytes")


class Gateway:
    """The request pipeline shared by every dialect."""

    def __init__(self, config: GatewayConfig, backends: Backends, metrics: GatewayMetrics) -> None:
        self.config = config
        self.backends = backends
        self.metrics = metrics
        self.limiter = RateLimiter(
            Limit(config.rate_limit_rps, config.rate_limit_burst),
            parse_limits(config.key_rate_limits),
            time.monotonic,
        )

    def authenticate(self, request: Request) -> str:
        key = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        if not key or key not in self.config.api_keys:
            raise ApiError(ErrorCode.INVALID_API_KEY, "Missing or invalid API key")
        return key

    def rate_limit(self, key: str) -> None:
        wait_s = self.limiter.acquire(key)
        if wait_s > 0:
            raise ApiError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                "Rate limit reached for this API key",
                retry_after_s=wait_s,
            )

    async def read_body(self, request: Request) -> bytes:
        cap = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _too_large(cap)
        parts: list[bytes] = []
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > cap:
                raise _too_large(cap)
            parts.append(part)
        return b"".join(parts)

    async def normalize(self, raw: bytes) -> bytes:
        """A4: repair tool schemas; on any failure the original body goes on."""
        try:
            reply = await self.backends.normalizer.Normalize(
                normalizer_pb2.NormalizeRequest(body=raw), timeout=self.config.normalize_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            self.metrics.normalize_fallbacks.inc()
            log.warning("normalizer unavailable, body sent as is", extra={"code": exc.code().name})
            return raw
        return bytes(reply.body) if reply.changed else raw

    async def serve(self, scope: Scope, receive: Receive, send: Send, dialect: Dialect) -> None:
        """The inference endpoints' ASGI entry (see `Edge`)."""
        try:
            response = await self.handle(Request(scope, receive), dialect)
        except Exception:
            response = _internal_error(scope["path"])
        await response(scope, receive, send)

    async def handle(self, request: Request, dialect: Dialect) -> Response:
        request_id = request.headers.get("x-request-id") or f"req_{uuid.uuid4().hex}"
        status = 500
        try:
            response = await self._handle(request, dialect, request_id)
            status = response.status_code
            return response
        except ApiError as err:
            status = err.status
            return error_response(err, dialect.error_body, request_id=request_id)
        except ClientGone:
            status = 499  # nginx's "client closed request"; nothing reaches the client
            return Response(status_code=status)
        finally:
            self.metrics.requests.labels(dialect.name, str(status)).inc()

    async def _handle(self, request: Request, dialect: Dialect, request_id: str) -> Response:
        timing = Timing()
        self.rate_limit(self.authenticate(request))
        raw = await self.read_body(request)
        if b'"tools"' in raw:
            raw = await self.normalize(raw)
        timing.normalize_us = timing.lap()
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise bad_request("request body is not valid JSON") from exc
        if not isinstance(doc, dict):
            raise bad_request("request body must be a JSON object")
        req = dialect.lower(doc, raw, self.config.default_max_tokens)
        timing.parse_us = timing.lap()
        call = await self.backends.dispatches.start(
            dispatcher_pb2.DispatchRequest(
                request_id=request_id,
                model=req.model,
                body=req.body,
                kind=dispatcher_pb2.REQUEST_KIND_COMPLETIONS
                if req.completions
                else dispatcher_pb2.REQUEST_KIND_CHAT,
                traits=hedgerow_common_pb2.Traits(
                    has_tools=req.has_tools, requires_vision=req.requires_vision
                ),
                prompt_tokens=req.prompt_tokens,
                max_tokens=req.max_tokens,
                allowlist=list(req.allowlist),
            )
        )
        events = DispatchEvents(call)
        try:
            committed = await _unless_client_gone(request.receive, self._await_commit(events))
        except BaseException:
            call.cancel()
            raise
        headers = {
            "X-Request-Id": request_id,
            "X-Provider-Id": committed.provider_id,
            "X-Provider-Version": committed.provider_version,
            "X-Attempts": str(committed.attempts),
            "X-Timing": json.dumps(
                {
                    "parse_us": timing.parse_us,
                    "normalize_us": timing.normalize_us,
                    "admit_us": committed.admit_us,
                    "queue_us": committed.queue_us,
                    "dispatch_us": committed.dispatch_us,
                    "provider_us": committed.provider_us,
                },
                separators=(",", ":"),
            ),
        }
        if req.stream:
            return EventStream(self._relay(events, dialect, req), {**headers, **SSE_HEADERS})
        try:
            body = await _unless_client_gone(request.receive, self._assemble(events, dialect, req))
        finally:
            call.cancel()
        return JSONResponse(body, headers=headers)

    async def _await_commit(self, events: DispatchEvents) -> dispatcher_pb2.Committed:
        """A8: nothing is written before the dispatcher commits or fails."""
        while True:
            event = await events.next(committed=False)
            kind = event.WhichOneof("event")
            if kind == "committed":
                return event.committed
            if kind == "failed":
                failure = Failure.from_proto(event.failed)
                param = "model" if failure.code is ErrorCode.MODEL_NOT_FOUND else None
                raise ApiError.of(failure, param)
            raise ApiError(ErrorCode.PROVIDER_ERROR, f"dispatcher sent {kind} before commit")

    async def _relay(
        self, events: DispatchEvents, dialect: Dialect, req: CanonicalRequest
    ) -> AsyncIterator[bytes]:
        """Streams the rendered events; what arrived in one message goes out in one write
        (every chunk still its own SSE event)."""
        renderer = dialect.stream(req)
        try:
            while True:
                try:
                    batch = await events.batch(committed=True)
                except ApiError as err:
                    yield self._in_band(dialect, renderer, err, status=502)
                    return
                out, ended = self._render(batch, renderer, dialect)
                if out:
                    yield out
                if ended:
                    return
        finally:
            events.call.cancel()

    def _render(
        self, batch: list[dispatcher_pb2.DispatchEvent], renderer: StreamRenderer, dialect: Dialect
    ) -> tuple[bytes, bool]:
        """The bytes for `batch`, and whether the stream ends with them."""
        parts: list[bytes] = []
        for event in batch:
            kind = event.WhichOneof("event")
            if kind == "chunks":
                try:
                    parts.append(renderer.chunks(list(event.chunks.chunks)))
                except BadChunk as exc:
                    err = ApiError(ErrorCode.PROVIDER_ERROR, str(exc))
                    parts.append(self._in_band(dialect, renderer, err))
                    return b"".join(parts), True
            elif kind == "completed":
                parts.append(renderer.completed(event.completed.usage))
                return b"".join(parts), True
            elif kind == "stream_error":
                err = ApiError.of(Failure.from_proto(event.stream_error))
                parts.append(self._in_band(dialect, renderer, err))
                return b"".join(parts), True
        return b"".join(parts), False

    def _in_band(
        self, dialect: Dialect, renderer: StreamRenderer, err: ApiError, *, status: int = 0
    ) -> bytes:
        """B3: after commit an error ends the stream in band, in the client's dialect."""
        self.metrics.in_band_errors.labels(dialect.name).inc()
        if status:
            err = ApiError(err.code, err.message, status=status, param=err.param)
        return renderer.error(err)

    async def _assemble(
        self, events: DispatchEvents, dialect: Dialect, req: CanonicalRequest
    ) -> dict[str, Any]:
        assembler = dialect.assembler(req)
        while True:
            event = await events.next(committed=True)
            kind = event.WhichOneof("event")
            if kind == "chunks":
                try:
                    for chunk in event.chunks.chunks:
                        assembler.add(chunk)
                except BadChunk as exc:
                    raise ApiError(ErrorCode.PROVIDER_ERROR, str(exc)) from exc
            elif kind == "completed":
                return assembler.result(event.completed.usage)
            elif kind == "stream_error":
                # Nothing was written yet: the error becomes the response's own status.
                self.metrics.in_band_errors.labels(dialect.name).inc()
                failure = Failure.from_proto(event.stream_error)
                raise ApiError(
                    failure.code,
                    failure.message or "provider failed mid-response",
                    status=failure.status if failure.status >= 500 else 502,
                )

    async def list_models(self, request: Request) -> Response:
        self.authenticate(request)
        try:
            reply = await self.backends.registry.ListModels(
                registry_pb2.ListModelsRequest(), timeout=self.config.registry_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise ApiError(
                ErrorCode.SERVICE_UNAVAILABLE, "routing service unavailable", retry_after_s=2
            ) from exc
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "hedgerow"} for m in reply.models
        ]
        return JSONResponse({"object": "list", "data": data})


class Edge:
    """What uvicorn serves. The inference endpoints (POST) go straight to the pipeline, a
    plain ASGI call: FastAPI's routing, dependency and middleware layers cost a fifth of a
    millisecond per request on the hot path and do nothing for it. Everything else (the
    same paths' other methods, /v1/models, health, metrics, 404s, lifespan) is the
    FastAPI app's."""

    def __init__(
        self, app: FastAPI, state: dict[str, Gateway], routes: Mapping[str, Dialect]
    ) -> None:
        self.app = app
        self._state = state
        self._routes = routes

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
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
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

    def endpoint(dialect: Dialect) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            return await gw().handle(request, dialect)

        return handler

    for path, dialect in ROUTES.items():
        # Served by `Edge` once started; registered so that other methods get a 405.
        app.add_api_route(path, endpoint(dialect), methods=["POST"])

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return await gw().list_models(request)

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            await gw().backends.registry.ListModels(registry_pb2.ListModelsRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready"})

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
        return _internal_error(request.url.path)

    return Edge(app, state, ROUTES)
