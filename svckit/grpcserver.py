"""The lifecycle every gRPC service shares: bind, auth, health (+ reflection in dev), metrics,
graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from svckit.auth import ServiceAuth

log = logging.getLogger(__name__)

# The largest gRPC message any of our servers or channels sends or accepts, stated on both
# ends alike. What grows with traffic stays far below it: the dispatcher splits a dispatch's
# events by HEDGEROW_DISPATCH_MESSAGE_BYTES, the registry caps its listings.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class RunningServer:
    """A started gRPC server; `port` is the bound port (useful when asked for port 0)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace_s: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_grpc(
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    *,
    host: str,
    port: int,
    auth: ServiceAuth,
) -> RunningServer:
    """Create a grpc.aio server; `register` adds servicers; health is added, and reflection
    when `auth` allows it. Every call but health's must carry `auth`'s service token."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
        interceptors=auth.interceptors(),
    )
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if auth.reflection:
        names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {host}:{port}")
    await server.start()
    for name in (*service_names, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server=server, port=bound, health=health_servicer)


def start_metrics(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serve `/metrics` on a small HTTP port (a thread); 0 picks a free port, -1 disables."""
    if port < 0:
        return -1
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    return int(httpd.server_address[1])


async def wait_for_stop_signal(on_stop: Callable[[], Awaitable[None]]) -> None:
    """Block until SIGINT or SIGTERM, then run `on_stop` (graceful shutdown)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await on_stop()


# Client channels between services: large messages, and a short reconnect backoff so a
# restarted peer is used again within a second instead of grpc's default of up to 120 s.
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
