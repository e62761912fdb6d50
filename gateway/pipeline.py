"""The request pipeline every inference endpoint shares, from the request to the committed
dispatch: auth, rate limit, body cap, normalization, lowering, dispatch start, the wait
for commit (A2-A4, A8). The answer after commit is `gateway.relay`'s."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import grpc
from fastapi import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from contract import dispatcher_pb2, hedgerow_common_pb2, normalizer_pb2, registry_pb2
from contract.errors import ErrorCode
from gateway.backends import Backends
from gateway.config import GatewayConfig
from gateway.dialects.base import Dialect
from gateway.disconnect import ClientGone, unless_client_gone
from gateway.dispatch import DispatchEvents
from gateway.errors import ApiError, bad_request, error_body_for_path, error_response
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import Limit, RateLimiter, parse_limits
from gateway.relay import Relay
from gateway.sse import EventStream

log = logging.getLogger(__name__)


@dataclass
class Timing:
    """The gateway's own share of `X-Timing` (A8), measured lap by lap."""

    started: float = field(default_factory=time.perf_counter)
    parse_us: int = 0
    normalize_us: int = 0

    def lap(self) -> int:
        now = time.perf_counter()
        elapsed = int((now - self.started) * 1e6)
        self.started = now
        return elapsed


def internal_error(path: str) -> Response:
    """A bug of ours: logged with its traceback (call while handling it), told as a 500."""
    log.exception("unhandled error", extra={"path": path})
    err = ApiError(ErrorCode.INTERNAL_ERROR, "internal error")
    return error_response(err, error_body_for_path(path))


def _too_large(cap: int) -> ApiError:
    return ApiError(ErrorCode.REQUEST_TOO_LARGE, f"request body exceeds {cap} bytes")


class Gateway:
    """The request pipeline shared by every dialect (and /v1/models)."""

    def __init__(self, config: GatewayConfig, backends: Backends, metrics: GatewayMetrics) -> None:
        self.config = config
        self.backends = backends
        self.metrics = metrics
        self.relay = Relay(metrics)
        self.limiter = RateLimiter(
            Limit(config.rate_limit_rps, config.rate_limit_burst),
            parse_limits(config.key_rate_limits),
            time.monotonic,
        )

    def authenticate(self, request: Request) -> str:
        """A2: the API key from `Authorization: Bearer` or `x-api-key`, else 401."""
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
        """A3: the whole body, or 413 as soon as it is known to exceed the cap."""
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
        """The inference endpoints' ASGI entry (see `gateway.app.Edge`)."""
        try:
            response = await self.handle(Request(scope, receive), dialect)
        except Exception:
            response = internal_error(scope["path"])
        await response(scope, receive, send)

    async def handle(self, request: Request, dialect: Dialect) -> Response:
        """The response to one inference request, counted by endpoint and status; every
        refusal is answered in the dialect's error shape."""
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
            committed = await unless_client_gone(request.receive, events.committed())
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
            # The stream cancels the dispatch when it ends or the client leaves.
            return EventStream(self.relay.stream(events, dialect, req), headers)
        try:
            body = await unless_client_gone(
                request.receive, self.relay.assemble(events, dialect, req)
            )
        finally:
            call.cancel()
        return JSONResponse(body, headers=headers)

    async def list_models(self, request: Request) -> Response:
        """GET /v1/models: what online providers serve (A1)."""
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
