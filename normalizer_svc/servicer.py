"""Normalizer gRPC servicer: proto <-> the pure `schema` module, plus metrics."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry, Counter

from contract import normalizer_pb2, normalizer_pb2_grpc
from contract.schema import normalize_body
from normalizer_svc.config import NormalizerConfig


class NormalizerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.bodies = Counter("normalizer_bodies", "Bodies seen", registry=registry)
        self.changed = Counter("normalizer_changed", "Bodies changed", registry=registry)
        self.repairs = Counter("normalizer_repairs", "Schema repairs made", registry=registry)
        self.skipped = Counter(
            "normalizer_skipped", "Bodies left as is by a guard", ["reason"], registry=registry
        )


class NormalizerServicer(normalizer_pb2_grpc.NormalizerServicer):
    def __init__(self, config: NormalizerConfig, metrics: NormalizerMetrics) -> None:
        self._config = config
        self._metrics = metrics

    async def Normalize(
        self, request: normalizer_pb2.NormalizeRequest, context: grpc.aio.ServicerContext
    ) -> normalizer_pb2.NormalizeReply:
        result = normalize_body(
            request.body, max_bytes=self._config.max_body_bytes, max_depth=self._config.max_depth
        )
        self._metrics.bodies.inc()
        if result.changed:
            self._metrics.changed.inc()
            self._metrics.repairs.inc(result.repairs)
        if result.skipped is not None:
            self._metrics.skipped.labels(result.skipped).inc()
        return normalizer_pb2.NormalizeReply(
            body=result.body, changed=result.changed, repairs=result.repairs
        )
