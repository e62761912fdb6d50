"""What the registry believes of providers and what it tells about them, through a real
grpc.aio registry server on port 0 and the dispatcher's real client (`GrpcRegistry`)
(C4, C5, C7, C8, issue 19).

- a ModelsUpdate (an upsert of an already registered link session) keeps an active
  cooldown; only a new session's registration starts clean (C4);
- speed samples ride the Release on the Slots stream and reach the estimates (C5);
- every reply that grows with the fleet is bounded: ListModels (live trusted providers'
  models, de-duplicated, capped with `truncated`), Explain (capped rows with the total) and
  Stats' ids; none approaches the gRPC limit (C7, C8).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest

from contract import hedgerow_common_pb2 as common_pb2
from contract import registry_pb2, registry_pb2_grpc
from dispatcher_svc.registry_client import GrpcRegistry, Speed
from registry_svc import server as registry_server
from registry_svc.cli import explain_table
from registry_svc.config import RegistryConfig
from registry_svc.model import RegistrySettings
from registry_svc.registry import Registry

PLAIN = common_pb2.Traits()
TIMEOUT_S = 5.0


@dataclass(eq=False)  # a session is itself, as `link.ProviderSession` is
class Session:
    """What `GrpcRegistry.upsert` reads of a link session (`link.ProviderSession`)."""

    provider_id: str
    models: list[common_pb2.ModelInfo] = field(
        default_factory=lambda: [common_pb2.ModelInfo(id="m", max_concurrency=4)]
    )
    version: str = "0.7.0"
    trusted: bool = True
    decode_tps: float = 50.0
    prefill_tps: float = 1000.0
    hardware: str = "cpu"


@dataclass
class Registryd:
    core: Registry
    stub: registry_pb2_grpc.RegistryStub
    client: GrpcRegistry

    async def upsert(self, session: Session) -> None:
        await self.client.upsert(cast(Any, session))

    async def reserve(self, rid: str, model: str = "m") -> str:
        reservation = await self.client.reserve(
            model=model,
            traits=PLAIN,
            exclude=(),
            avoid_version="",
            allowlist=(),
            prompt_tokens=1,
            max_tokens=8,
            may_queue=False,
            timeout_s=TIMEOUT_S,
            reservation_id=rid,
        )
        return reservation.provider_id

    async def reasons(self, model: str = "m") -> dict[str, list[str]]:
        reply = await self.stub.Explain(
            registry_pb2.ExplainRequest(model=model, traits=PLAIN), timeout=TIMEOUT_S
        )
        return {row.provider_id: [r.split("(")[0] for r in row.reasons] for row in reply.providers}


@pytest.fixture
async def start() -> AsyncIterator[Any]:
    stops: list[Any] = []

    async def _start(**settings: Any) -> Registryd:
        core = Registry(RegistrySettings(**settings), clock=time.monotonic, rng=random.Random(3))
        running = await registry_server.start(RegistryConfig(port=0), core)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        client = GrpcRegistry(channel, rpc_timeout_s=TIMEOUT_S)
        stops.extend([lambda: running.stop(0), channel.close, client.aclose])
        return Registryd(core, registry_pb2_grpc.RegistryStub(channel), client)

    yield _start
    for stop in reversed(stops):
        await stop()


async def test_c4_a_models_update_keeps_an_active_cooldown_a_new_registration_clears_it(
    start: Any,
) -> None:
    r = await start()
    session = Session("p1")
    await r.upsert(session)
    for i in range(2):  # two 502 strikes within the window: a cooldown (C4)
        assert await r.reserve(f"strike-{i}") == "p1"
        await r.client.release(f"strike-{i}", 502)
    assert "cooling_down_until" in (await r.reasons())["p1"]

    # The same session changes its models (a ModelsUpdate): still cooling.
    session.models = [*session.models, common_pb2.ModelInfo(id="n", max_concurrency=1)]
    await r.upsert(session)
    reasons = await r.reasons()
    assert "cooling_down_until" in reasons["p1"], "a ModelsUpdate must not clear a cooldown"
    assert (await r.reasons("n"))["p1"] == [], "its new model is served"

    # The provider connects again: a new session, a new registration, a clean start.
    await r.upsert(Session("p1"))
    assert (await r.reasons())["p1"] == []


async def test_c4_a_models_update_cannot_restore_withdrawn_trust(start: Any) -> None:
    r = await start()
    session = Session("p1")
    await r.upsert(session)
    await r.client.report_load("p1", [], trusted=False)
    await r.upsert(session)  # the same session again: an update
    assert "untrusted" in (await r.reasons())["p1"]


async def test_c5_speed_samples_ride_the_release_to_the_estimates(start: Any) -> None:
    r = await start()
    await r.upsert(Session("p1"))
    for i, sample in enumerate(
        [
            Speed(ttft_s=0.25, decode_tps=40.0),
            Speed(ttft_s=5.0, no_content=True),
            Speed(decode_tps=60.0),  # no first-content time: not a zero one
        ]
    ):
        await r.reserve(f"s-{i}")
        await r.client.release(f"s-{i}", 200 if i != 1 else 0, sample)
    estimate = r.core.speeds.get("p1", "m")
    assert estimate is not None
    assert (estimate.ttft_n, estimate.slow_n, estimate.decode_n) == (2, 1, 2)
    assert 0.25 < estimate.ttft_s <= 5.0
    # A second Release of the same reservation takes no second sample.
    await r.client.release("s-0", 200, Speed(ttft_s=100.0))
    assert estimate.ttft_n == 2


async def test_c8_list_models_is_bounded_deduplicated_and_says_when_truncated(start: Any) -> None:
    r = await start(list_models_max=5)
    many = [common_pb2.ModelInfo(id=f"{'z' * 200}-{i:05d}") for i in range(3000)]
    shared = [common_pb2.ModelInfo(id="shared-a"), common_pb2.ModelInfo(id="shared-b")]
    await r.upsert(Session("poisoner", models=[*shared, *many]))
    await r.upsert(Session("honest-1", models=shared))
    await r.upsert(Session("honest-2", models=shared))
    await r.upsert(Session("shady", models=[common_pb2.ModelInfo(id="secret")], trusted=False))
    reply = await r.stub.ListModels(registry_pb2.ListModelsRequest(), timeout=TIMEOUT_S)
    assert reply.truncated and len(reply.models) == 5
    assert len(set(reply.models)) == 5 and list(reply.models) == sorted(reply.models)
    assert {"shared-a", "shared-b"} <= set(reply.models), "what the fleet serves stays"
    assert "secret" not in reply.models, "only live trusted providers' models"
    assert reply.ByteSize() < 64 * 1024

    small = await start()
    await small.upsert(Session("a", models=shared))
    await small.upsert(Session("b", models=shared))
    reply = await small.stub.ListModels(registry_pb2.ListModelsRequest(), timeout=TIMEOUT_S)
    assert (list(reply.models), reply.truncated) == (["shared-a", "shared-b"], False)


async def test_c7_explain_rows_are_bounded_and_the_ones_that_matter_come_first(
    start: Any,
) -> None:
    r = await start(explain_max_rows=4, listed_providers_max=3)
    for i in range(10):
        await r.upsert(Session(f"other-{i:02d}", models=[common_pb2.ModelInfo(id="x")]))
    await r.upsert(Session("serves-busy", models=[common_pb2.ModelInfo(id="m")]))
    await r.upsert(Session("serves-free"))
    await r.reserve("hold")  # picks one of them; whichever, both serve "m"
    reply = await r.stub.Explain(
        registry_pb2.ExplainRequest(model="m", traits=PLAIN), timeout=TIMEOUT_S
    )
    assert (len(reply.providers), reply.total, reply.truncated) == (4, 12, True)
    ids = [row.provider_id for row in reply.providers]
    assert ids[0] in ("serves-busy", "serves-free") and reply.providers[0].eligible
    assert set(ids[:2]) == {"serves-busy", "serves-free"}, "then those serving the model"
    assert "(4 of 12 providers shown" in explain_table(reply), "the CLI says so too"
    stats = await r.stub.Stats(registry_pb2.StatsRequest(), timeout=TIMEOUT_S)
    assert (len(stats.online_provider_ids), stats.providers_online) == (3, 12)
