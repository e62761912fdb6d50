"""A scripted attacker on the provider link of a whole stack (real processes): each attack of
the threat model's "hostile providers" table is tried and held, while honest traffic keeps
being served by the honest providers (rules F4-F7)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from contract import hedgerow_common_pb2 as common_pb2
from contract import provider_link_pb2 as link_pb2
from contract.link import CLOSE_POLICY, CLOSE_PROTOCOL, CLOSE_TRY_AGAIN
from contract.sealing import KeyPair, SealedChannel
from stack.launcher import API_KEY, ENROLLMENT_TOKEN, ProviderSpec, Stack
from tests.e2e.conftest import FAST_ENV

pytestmark = pytest.mark.e2e
MODEL = "hedgerow-sim-1"
CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455
LINK_CAP = 5  # sessions per enrollment token: the two honest providers and three more


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    env = {**FAST_ENV, "HEDGEROW_MAX_LINKS_PER_TOKEN": str(LINK_CAP)}
    with Stack([ProviderSpec("sim-a"), ProviderSpec("sim-b")], env=env) as s:
        yield s


def chat(stack: Stack, text: str) -> httpx.Response:
    body = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=30)


def assert_honest_traffic_served(stack: Stack, count: int = 6) -> None:
    for i in range(count):
        reply = chat(stack, f"honest {i}")
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-provider-id"] in ("sim-a", "sim-b")


class Attacker:
    """One link connection that registers as told and then stays silent."""

    def __init__(
        self,
        url: str,
        provider_id: str,
        *,
        models: Sequence[str] = ("attack-model",),
        version: str = "0.7.0",
        keys: KeyPair | None = None,
    ) -> None:
        self.url, self.provider_id, self.models, self.version = url, provider_id, models, version
        self.keys = keys or KeyPair.generate()
        self.requests = 0

    def register_frame(self) -> bytes:
        models = [common_pb2.ModelInfo(id=m, max_concurrency=4) for m in self.models]
        register = link_pb2.Register(
            provider_id=self.provider_id,
            version=self.version,
            models=models,
            public_key=self.keys.public_bytes,
            enrollment_token=ENROLLMENT_TOKEN,
        )
        frame: bytes = link_pb2.Frame(register=register).SerializeToString()
        return frame

    async def attempt(self, hold_s: float = 0.0) -> int | str:
        """ "registered", or the close code the dispatcher answered with."""
        try:
            async with connect(self.url, max_size=None) as ws:
                with contextlib.suppress(ConnectionClosed, OSError):
                    await ws.send(self.register_frame())
                async with asyncio.timeout(10):
                    async for data in ws:
                        frame = link_pb2.Frame.FromString(data)
                        kind = frame.WhichOneof("kind")
                        if kind == "challenge":
                            channel = SealedChannel(
                                self.keys, frame.challenge.dispatcher_public_key
                            )
                            answer = link_pb2.ChallengeResponse(
                                sealed_nonce=channel.seal(frame.challenge.nonce)
                            )
                            await ws.send(
                                link_pb2.Frame(challenge_response=answer).SerializeToString()
                            )
                        elif kind == "registered":
                            break
                        elif kind == "request":
                            self.requests += 1
                if ws.close_code is not None:
                    return ws.close_code
                await asyncio.sleep(hold_s)
                return "registered"
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else -1


def test_f5_an_id_cannot_be_taken_over_by_another_key(stack: Stack) -> None:
    thief = Attacker(stack.link_url, "sim-a", models=(MODEL,))
    assert asyncio.run(thief.attempt()) == CLOSE_POLICY
    # The victim kept its session: it is online and every request routed to it is its own.
    assert "sim-a" in stack.registry_stats().online_provider_ids
    served = {chat(stack, f"after hijack {i}").headers["x-provider-id"] for i in range(8)}
    assert served <= {"sim-a", "sim-b"} and thief.requests == 0


def test_f6_one_token_cannot_flood_the_fleet_with_sessions(stack: Stack) -> None:
    attackers = [Attacker(stack.link_url, f"flood-{i}") for i in range(12)]

    async def flood() -> list[int | str]:
        return list(await asyncio.gather(*(a.attempt(hold_s=2.0) for a in attackers)))

    results = asyncio.run(flood())
    # The honest two hold two of the token's places: at most the rest registers; every
    # other attempt is refused, over the token's cap (1008) or the door's (1013, F7).
    assert results.count("registered") <= LINK_CAP - 2
    assert CLOSE_POLICY in results
    assert all(r in ("registered", CLOSE_POLICY, CLOSE_TRY_AGAIN) for r in results), results
    assert_honest_traffic_served(stack)


@pytest.mark.parametrize(
    ("provider_id", "version", "models", "code"),
    [
        # a line break in an id or version would end up in response headers and logs
        ("evil\r\nX-Injected: 1", "0.7.0", (MODEL,), CLOSE_PROTOCOL),
        ("evil-version", "0.7.0\r\nX: y", (MODEL,), CLOSE_PROTOCOL),
        # model-list poisoning: too many models, or too long an id
        ("many-models", "0.7.0", tuple(f"m{i}" for i in range(65)), CLOSE_PROTOCOL),
        ("long-model", "0.7.0", ("m" * 300,), CLOSE_PROTOCOL),
    ],
)
def test_f4_a_register_that_lies_in_its_strings_or_counts_is_refused(
    stack: Stack, provider_id: str, version: str, models: tuple[str, ...], code: int
) -> None:
    attacker = Attacker(stack.link_url, provider_id, version=version, models=models)
    assert asyncio.run(attacker.attempt()) == code
    listed = httpx.get(
        f"{stack.base_url}/models", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )
    assert listed.status_code == 200
    assert {m["id"] for m in listed.json()["data"]} <= {MODEL, "hedgerow-sim-vision-1"}
    assert httpx.get(f"{stack.base_url.removesuffix('/v1')}/readyz", timeout=10).status_code == 200


def test_f7_a_huge_register_before_the_challenge_is_refused_at_once(stack: Stack) -> None:
    # ~9 MiB of model ids: under the link's frame limit, far over the pre-auth limit.
    attacker = Attacker(stack.link_url, "poison", models=tuple("x" * 200 for _ in range(45_000)))

    async def poison() -> list[int | str]:
        return list(await asyncio.gather(*(attacker.attempt() for _ in range(4))))

    results = asyncio.run(poison())
    assert results == [CLOSE_MESSAGE_TOO_BIG] * 4, results
    assert "poison" not in stack.registry_stats().online_provider_ids
    assert_honest_traffic_served(stack, 3)
