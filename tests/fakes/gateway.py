"""The gateway's backends faked (normalizer, registry, dispatcher, their gRPC health), and
the real gateway app served by a real uvicorn with the edge's protocol on 127.0.0.1 port 0,
in the test's own event loop: what the gateway does at the socket, without the stack.

The fake dispatcher answers a chat request by a marker in its body: none -> committed, one
content chunk, completed; `[[hold]]` -> committed and one chunk, then nothing until the
dispatch is cancelled; `[[fail]]` -> failed before commit (503); `[[stream_error]]` ->
committed, then an in-band error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import uvicorn
from grpc_health.v1 import health_pb2

from contract import dispatcher_pb2, normalizer_pb2, registry_pb2
from contract import hedgerow_common_pb2 as common_pb2
from contract.errors import ErrorCode, Failure
from gateway.app import Edge, create_app
from gateway.backends import Backends
from gateway.config import GatewayConfig
from gateway.pipeline import Gateway
from gateway.server import uvicorn_config

KEY = "test-key-0123456789"
OTHER_KEY = "other-key-0123456789"
CHUNK = json.dumps(
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
).encode()


def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def _events(*events: dispatcher_pb2.DispatchEvent) -> dispatcher_pb2.DispatchEvents:
    return dispatcher_pb2.DispatchEvents(events=list(events))


_COMMITTED = dispatcher_pb2.DispatchEvent(
    committed=dispatcher_pb2.Committed(provider_id="p1", provider_version="1.0", attempts=1)
)
_CHUNK = dispatcher_pb2.DispatchEvent(chunks=dispatcher_pb2.Chunks(chunks=[CHUNK]))
_COMPLETED = dispatcher_pb2.DispatchEvent(
    completed=dispatcher_pb2.Completed(
        usage=common_pb2.Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2)
    )
)


class FakeCall:
    """One dispatch: its scripted messages, then (held) nothing until cancelled."""

    def __init__(self, messages: list[dispatcher_pb2.DispatchEvents], hold: bool) -> None:
        self._messages = messages
        self._hold = hold
        self.cancelled = asyncio.Event()

    async def read(self) -> dispatcher_pb2.DispatchEvents | None:
        if self._messages:
            return self._messages.pop(0)
        if self._hold:
            await self.cancelled.wait()
        return None

    def cancel(self) -> None:
        self.cancelled.set()


class FakeDispatches:
    """Records every dispatch started; answers by the marker in the body (module doc)."""

    def __init__(self) -> None:
        self.started: list[dispatcher_pb2.DispatchRequest] = []
        self.calls: list[FakeCall] = []

    async def start(self, request: dispatcher_pb2.DispatchRequest) -> FakeCall:
        self.started.append(request)
        body = request.body
        if b"[[fail]]" in body:
            failed = Failure(ErrorCode.MODEL_UNAVAILABLE, "nothing can serve").to_proto()
            call = FakeCall([_events(dispatcher_pb2.DispatchEvent(failed=failed))], False)
        elif b"[[stream_error]]" in body:
            broken = Failure(ErrorCode.PROVIDER_ERROR, "provider broke").to_proto()
            error = dispatcher_pb2.DispatchEvent(stream_error=broken)
            call = FakeCall([_events(_COMMITTED, _CHUNK), _events(error)], False)
        elif b"[[hold]]" in body:
            call = FakeCall([_events(_COMMITTED, _CHUNK)], True)
        else:
            call = FakeCall([_events(_COMMITTED, _CHUNK), _events(_COMPLETED)], False)
        self.calls.append(call)
        return call

    async def aclose(self) -> None:
        return None


class FakeNormalizer:
    async def Normalize(
        self,
        request: normalizer_pb2.NormalizeRequest,
        timeout: float | None = None,  # noqa: ASYNC109 (the stub's signature)
    ) -> normalizer_pb2.NormalizeReply:
        return normalizer_pb2.NormalizeReply(body=request.body, changed=False)


class FakeRegistry:
    """ListModels answers `models`, or raises `error` when set."""

    def __init__(self) -> None:
        self.models: list[str] = ["m"]
        self.error: grpc.aio.AioRpcError | None = None

    async def ListModels(
        self,
        request: registry_pb2.ListModelsRequest,
        timeout: float | None = None,  # noqa: ASYNC109 (the stub's signature)
    ) -> registry_pb2.ListModelsReply:
        if self.error is not None:
            raise self.error
        return registry_pb2.ListModelsReply(models=self.models)


class FakeHealth:
    """A gRPC health stub: SERVING unless told otherwise; `error` raises instead."""

    def __init__(self) -> None:
        self.serving = True
        self.error: grpc.aio.AioRpcError | None = None

    async def Check(
        self,
        request: health_pb2.HealthCheckRequest,
        timeout: float | None = None,  # noqa: ASYNC109 (the stub's signature)
    ) -> health_pb2.HealthCheckResponse:
        if self.error is not None:
            raise self.error
        status = health_pb2.HealthCheckResponse.SERVING if self.serving else 2
        return health_pb2.HealthCheckResponse(status=status)


@dataclass
class Fakes:
    dispatches: FakeDispatches = field(default_factory=FakeDispatches)
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    health: dict[str, FakeHealth] = field(
        default_factory=lambda: {"registry": FakeHealth(), "dispatcher": FakeHealth()}
    )

    def backends(self, _config: GatewayConfig) -> Backends:
        fakes: Any = self  # the fakes stand in for the stubs' types
        return Backends(
            normalizer=FakeNormalizer(),  # type: ignore[arg-type]
            registry=fakes.registry,
            dispatches=fakes.dispatches,
            channels=(),
            health=fakes.health,
        )


@dataclass
class RunningGateway:
    port: int
    app: Edge
    fakes: Fakes

    @property
    def gateway(self) -> Gateway:
        gw = self.app.gateway
        assert gw is not None
        return gw

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


TEST_CONFIG = GatewayConfig(
    host="127.0.0.1",
    port=0,
    api_keys=(KEY, OTHER_KEY),
    max_connections=20,
    header_timeout_s=0.5,
    body_idle_timeout_s=0.5,
    body_timeout_s=5.0,
    key_concurrency=2,
    log_level="info",
)


@contextlib.asynccontextmanager
async def running_gateway(**overrides: Any) -> AsyncIterator[RunningGateway]:
    """The gateway app under uvicorn with the edge protocol, as `python -m gateway` runs it
    (gateway.server.uvicorn_config), with TEST_CONFIG's short deadlines and `overrides`."""
    config = dataclasses.replace(TEST_CONFIG, **overrides)
    fakes = Fakes()
    app = create_app(config, fakes.backends)
    uv_config = uvicorn_config(config, app)
    server = uvicorn.Server(uv_config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield RunningGateway(int(port), app, fakes)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
