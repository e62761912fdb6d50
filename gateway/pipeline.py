"""The request pipeline every inference endpoint shares, from the request to the committed
dispatch: request id, auth, the key's concurrency and rate limits, body cap, normalization,
lowering, dispatch start, the wait for commit (A2-A4, A8, A11, A13, A14). The answer after
commit is `gateway.relay`'s; `serve` sends it and ends the request (its key's place, its
metric, its one log line if the client left)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import grpc
from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from contract import dispatcher_pb2, hedgerow_common_pb2, normalizer_pb2
from contract.errors import ErrorCode
from gateway import limits
from gateway.backends import Backends
from gateway.config import GatewayConfig
from gateway.dialects.base import Dialect
from gateway.disconnect import ClientGone, unless_client_gone
from gateway.dispatch import DispatchEvents
from gateway.errors import ApiError, bad_request, error_body_for_path, error_response
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import (
    ConcurrencyLimiter,
    Lease,
    Limit,
    RateLimiter,
    parse_concurrency,
    parse_limits,
)
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


def new_request_id() -> str:
    """Ours, when the client sent no acceptable `X-Request-Id` (A13)."""
    return f"req_{uuid.uuid4().hex}"


def _no_constants(name: str) -> object:
    # NaN and Infinity are not JSON; Python's parser takes them unless told not to, and a
    # provider handed one could fail on it (A16).
    raise ValueError(f"{name} is not valid JSON")


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
        self.concurrency = ConcurrencyLimiter(
            config.key_concurrency, parse_concurrency(config.key_concurrency_limits)
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
        """A11: 429 when the key is over its rate."""
        wait_s = self.limiter.acquire(key)
        if wait_s > 0:
            raise ApiError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                "Rate limit reached for this API key",
                retry_after_s=wait_s,
            )

    def admit(self, request: Request) -> Lease:
        """A2, A11, A14, before any byte of the body is read: the key, a place among its
        requests in flight (429 when it has its limit in flight already), then a token of
        its rate (429, the place given back). The caller releases the lease when the
        request ends."""
        key = self.authenticate(request)
        lease = self.concurrency.acquire(key)
        if lease is None:
            raise ApiError(
                ErrorCode.RATE_LIMIT_EXCEEDED,
                "Too many requests in flight for this API key",
                retry_after_s=1,
            )
        try:
            self.rate_limit(key)
        except ApiError:
            lease.release()
            raise
        return lease

    async def read_body(self, request: Request) -> bytes:
        """A3: the whole body, or 413 as soon as it is known to exceed the cap."""
        cap = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            raise _too_large(cap)
        parts: list[bytes] = []
        size = 0
        try:
            async for part in request.stream():
                size += len(part)
                if size > cap:
                    raise _too_large(cap)
                parts.append(part)
        except ClientDisconnect as exc:
            # The client left (or the edge closed it: A12's body deadlines).
            raise ClientGone() from exc
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
        """The inference endpoints' ASGI entry (see `gateway.app.Edge`): the answer, sent,
        and the request's end, however it ends (answered, refused, failed, the client gone):
        its key's place given back (A14), its status counted once, one info line if the
        client left. Every refusal is answered in the dialect's error shape."""
        request = Request(scope, receive)
        rid = limits.request_id(request.headers.get("x-request-id"), new_request_id)
        lease: Lease | None = None
        status = 500
        gone = ""
        try:
            try:
                lease = self.admit(request)
                response = await self._handle(request, dialect, rid)
            except ApiError as err:
                response = error_response(err, dialect.error_body, request_id=rid)
            except ClientGone:
                gone = "before the answer"
                response = Response(status_code=499)  # nginx's "client closed request"
            except Exception:
                response = internal_error(scope["path"])
            status = response.status_code
            await response(scope, receive, send)
            if isinstance(response, EventStream) and response.client_gone:
                gone = "during the stream"
        finally:
            if lease is not None:
                lease.release()
            self.metrics.requests.labels(dialect.name, str(status)).inc()
        if gone:
            # A client hanging up is routine, not an error of ours: one line, no traceback.
            log.info(
                "client disconnected",
                extra={"request_id": rid, "path": scope["path"], "when": gone},
            )

    async def _handle(self, request: Request, dialect: Dialect, request_id: str) -> Response:
        timing = Timing()
        raw = await self.read_body(request)
        if b'"tools"' in raw:
            raw = await self.normalize(raw)
        timing.normalize_us = timing.lap()
        try:
            doc = json.loads(raw, parse_constant=_no_constants)
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
