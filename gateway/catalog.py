"""What the gateway tells about the fleet behind it: `GET /v1/models` and `/readyz` (A1, A17).

Both must hold however large the fleet grows or however much providers advertise. /readyz
asks only the gRPC health of the registry and the dispatcher (a constant-size answer);
/v1/models asks the registry for the model ids, keeps at most `max_listed_models` of them
that are plausible ids, and answers a clear 503 when the registry cannot answer (too slow,
unreachable, or an answer over the channel's 16 MiB message limit).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from contract import registry_pb2
from contract.errors import ErrorCode
from contract.link import MAX_MODEL_ID_CHARS
from gateway.errors import ApiError
from gateway.pipeline import Gateway

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 1.0
# A model id we list: printable ASCII without spaces, as ids are on every engine we know
# (`org/name`, `name:tag`, `name@rev`), no longer than the link accepts. Providers are
# strangers: anything else is not passed on to clients.
_MODEL_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_MODEL_ID_CHARS}}}")

_UNAVAILABLE = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "the registry did not answer in time",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the registry's answer was too large",
}


def listed_models(ids: Iterable[str], cap: int) -> list[str]:
    """The ids /v1/models lists: in the registry's order, each once, only plausible ids
    (see MAX_MODEL_ID_CHARS), at most `cap`."""
    out: list[str] = []
    seen: set[str] = set()
    for model_id in ids:
        if model_id in seen or not _MODEL_ID.fullmatch(model_id):
            continue
        seen.add(model_id)
        out.append(model_id)
        if len(out) >= cap:
            break
    return out


async def list_models(gw: Gateway, request: Request) -> Response:
    """GET /v1/models: the models online providers serve (A1, A17). Authenticated and
    rate-limited like inference (each call is a registry call). A registry that cannot
    answer is a 503 `service_unavailable` saying why, with Retry-After."""
    gw.rate_limit(gw.authenticate(request))
    try:
        reply = await gw.backends.registry.ListModels(
            registry_pb2.ListModelsRequest(), timeout=gw.config.registry_timeout_s
        )
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        gw.metrics.model_list_failures.labels(code.name).inc()
        log.warning("model list unavailable", extra={"grpc_code": code.name})
        why = _UNAVAILABLE.get(code, "the registry is unreachable")
        raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, f"model list unavailable: {why}") from exc
    data = [
        {"id": m, "object": "model", "created": 0, "owned_by": "hedgerow"}
        for m in listed_models(reply.models, gw.config.max_listed_models)
    ]
    return JSONResponse({"object": "list", "data": data})


async def _serving(stub: health_pb2_grpc.HealthStub) -> bool:
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=READY_TIMEOUT_S)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def readiness(health: Mapping[str, health_pb2_grpc.HealthStub]) -> Response:
    """GET /readyz: 200 when every service in `health` (the registry and the dispatcher)
    says SERVING on its gRPC health service, else 503 naming who is not."""
    names = list(health)
    serving = await asyncio.gather(*(_serving(health[name]) for name in names))
    services = {
        name: "serving" if ok else "not serving" for name, ok in zip(names, serving, strict=True)
    }
    if all(serving):
        return JSONResponse({"status": "ready", "services": services})
    return JSONResponse({"status": "not ready", "services": services}, status_code=503)
