"""Secrets and the internal gRPC surface (docs/threat-model.md).

Outside dev mode no service starts on a default secret: the gateway needs its API keys, the
dispatcher its enrollment tokens, and every gRPC service and client the shared service token
(`HEDGEROW_SERVICE_TOKEN`), which each internal call carries in its metadata and each server
checks. `HEDGEROW_DEV=1` (what `make run` and the tests' stacks set) fills in the well-known
dev values instead and says so in the log. Reflection is on only in dev mode unless
`HEDGEROW_GRPC_REFLECTION` says otherwise. The gRPC health service stays open: it tells
nothing and container health checks call it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc

from svckit.env import ConfigError, env_bool, env_list

log = logging.getLogger(__name__)

DEV_FLAG: Final = "HEDGEROW_DEV"
TOKEN_VAR: Final = "HEDGEROW_SERVICE_TOKEN"
DEV_SERVICE_TOKEN: Final = "hedgerow-dev-service-token"
TOKEN_HEADER: Final = "x-hedgerow-service-token"
MIN_SECRET_CHARS: Final = 16
_OPEN_METHODS: Final = ("/grpc.health.v1.Health/",)


def dev_mode(env: Mapping[str, str]) -> bool:
    return env_bool(env, DEV_FLAG, False)


def secrets_from_env(
    env: Mapping[str, str], name: str, dev_default: tuple[str, ...]
) -> tuple[str, ...]:
    """A list of secrets (API keys, enrollment tokens). In dev mode `dev_default` stands in
    when none is set; otherwise at least one is required, none may be a dev default, and
    each must be at least MIN_SECRET_CHARS long."""
    values = env_list(env, name)
    if dev_mode(env):
        if not values:
            log.warning("dev mode: using the public default", extra={"setting": name})
        return values or dev_default
    if not values:
        raise ConfigError(f"{name} must be set (or {DEV_FLAG}=1 for a local dev stack)")
    for value in values:
        if value in dev_default:
            raise ConfigError(f"{name} holds the public dev default; set a secret of your own")
        if len(value) < MIN_SECRET_CHARS:
            raise ConfigError(f"{name}: each value needs at least {MIN_SECRET_CHARS} characters")
    return values


@dataclass(frozen=True)
class ServiceAuth:
    """The internal gRPC surface's settings. `token` empty: calls carry none and servers
    check none — only for configs built in code (tests); `from_env` always sets one."""

    token: str = ""
    reflection: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServiceAuth:
        dev = dev_mode(env)
        token = secrets_from_env(env, TOKEN_VAR, (DEV_SERVICE_TOKEN,))[0]
        return cls(token=token, reflection=env_bool(env, "HEDGEROW_GRPC_REFLECTION", dev))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((TOKEN_HEADER, self.token),) if self.token else ()

    def interceptors(self) -> Sequence[grpc.aio.ServerInterceptor]:
        return (_RequireToken(self.token),) if self.token else ()


class _RequireToken(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses every call without the service token (UNAUTHENTICATED), health excepted."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(_OPEN_METHODS) or self._allowed(details):
            return await continuation(details)
        handler = await continuation(details)
        return _refusing(handler)

    def _allowed(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == TOKEN_HEADER:
                given = value if isinstance(value, bytes) else str(value).encode()
                return hmac.compare_digest(given, self._token)
        return False


def _refusing(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    """A handler of the same kind as `handler` that aborts UNAUTHENTICATED."""
    if handler is None:
        return None

    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong service token")

    async def deny_stream(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong service token")
        yield  # pragma: no cover  (abort raises)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    streams = handler.response_streaming
    make = kinds[(handler.request_streaming, streams)]
    return make(
        deny_stream if streams else deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ServiceChannel:
    """A channel (grpc.aio or sync) whose every call carries the service token: generated
    stubs build their calls through it (`unary_unary` & co.), so call sites stay as they
    are and no interceptor sits on a stream's messages."""

    def __init__(self, channel: Any, auth: ServiceAuth) -> None:
        self.channel = channel
        self._metadata = auth.metadata

    def _wrap(self, make: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        call = make(*args, **kwargs)
        if not self._metadata:
            return call
        return _WithToken(call, self._metadata)

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self.channel.unary_unary, *args, **kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self.channel.unary_stream, *args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self.channel.stream_unary, *args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self.channel.stream_stream, *args, **kwargs)

    def close(self, *args: Any) -> Any:
        return self.channel.close(*args)

    async def __aenter__(self) -> ServiceChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    def __enter__(self) -> ServiceChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()


class _WithToken:
    """A stub's multi-callable with the token added to every call's metadata."""

    def __init__(self, call: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._call = call
        self._metadata = metadata

    def __call__(self, *args: Any, metadata: Any = None, **kwargs: Any) -> Any:
        merged = self._metadata + tuple(metadata or ())
        return self._call(*args, metadata=merged, **kwargs)


def aio_channel(target: str, auth: ServiceAuth, options: Sequence[tuple[str, Any]]) -> Any:
    """An asyncio channel to an internal service, carrying `auth`'s token."""
    return ServiceChannel(grpc.aio.insecure_channel(target, options=options), auth)


def sync_channel(target: str, auth: ServiceAuth) -> Any:
    """A blocking channel to an internal service (tools, the launcher), carrying the token."""
    return ServiceChannel(grpc.insecure_channel(target), auth)
