"""`python -m svckit.healthcheck grpc HOST:PORT | http URL`: exit 0 when the target is healthy
(used by container health checks)."""

from __future__ import annotations

import sys
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(kind: str, target: str, timeout_s: float = 2.0) -> bool:
    if kind == "grpc":
        with grpc.insecure_channel(target) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout_s
                )
            except grpc.RpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    if kind == "http":
        try:
            with urllib.request.urlopen(target, timeout=timeout_s) as response:
                return bool(response.status == 200)
        except OSError:
            return False
    raise SystemExit(f"unknown check kind {kind!r}: use grpc or http")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m svckit.healthcheck grpc HOST:PORT | http URL")
    sys.exit(0 if check(sys.argv[1], sys.argv[2]) else 1)
