"""No default secrets outside dev mode, and an authenticated internal surface (threat model,
rules F9, F10), with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import httpx
import pytest

from contract import registry_pb2, registry_pb2_grpc
from stack.launcher import ProviderSpec, Stack
from tests.e2e.conftest import FAST_ENV

pytestmark = pytest.mark.e2e
API_KEY = "sk-live-e2e-0123456789"
SECRETS = {
    "HEDGEROW_DEV": "0",
    "HEDGEROW_API_KEYS": API_KEY,
    "HEDGEROW_ENROLLMENT_TOKENS": "enroll-e2e-0123456789",
    "HEDGEROW_ENROLLMENT_TOKEN": "enroll-e2e-0123456789",
    "HEDGEROW_SERVICE_TOKEN": "service-e2e-0123456789",
}


@pytest.mark.parametrize(
    ("module", "missing"),
    [
        ("gateway", "HEDGEROW_API_KEYS"),
        ("dispatcher_svc", "HEDGEROW_ENROLLMENT_TOKENS"),
        ("registry_svc", "HEDGEROW_SERVICE_TOKEN"),
        ("normalizer_svc", "HEDGEROW_SERVICE_TOKEN"),
    ],
)
def test_f9_a_service_without_its_secrets_refuses_to_start(module: str, missing: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEROW_")}
    done = subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert missing in done.stderr and "HEDGEROW_DEV=1" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def production_stack() -> Iterator[Stack]:
    with Stack([ProviderSpec("sim-a")], env={**FAST_ENV, **SECRETS}) as stack:
        yield stack


def test_f9_a_stack_with_its_own_secrets_serves(production_stack: Stack) -> None:
    body = {
        "model": "hedgerow-sim-1",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    }
    url = f"{production_stack.base_url}/chat/completions"
    ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
    assert ok.status_code == 200, ok.text
    dev = httpx.post(url, json=body, headers={"Authorization": "Bearer hedgerow-dev-key"})
    assert dev.status_code == 401


def test_f10_the_registry_refuses_a_caller_without_the_service_token(
    production_stack: Stack,
) -> None:
    with grpc.insecure_channel(production_stack.registry_addr) as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.UpsertProvider(
                registry_pb2.UpsertProviderRequest(
                    provider=registry_pb2.ProviderInfo(id="intruder", trusted=True)
                ),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    assert "intruder" not in production_stack.registry_stats().online_provider_ids
