"""No default secrets outside dev mode (threat model, rule F9)."""

from __future__ import annotations

import pytest

from dispatcher_svc.config import DEV_ENROLLMENT_TOKEN, DispatcherConfig
from gateway.config import DEV_API_KEY, GatewayConfig
from normalizer_svc.config import NormalizerConfig
from registry_svc.config import RegistryConfig
from svckit.auth import DEV_SERVICE_TOKEN, ServiceAuth, secrets_from_env
from svckit.env import ConfigError

TOKEN = "service-token-0123456789"
KEY = "sk-live-0123456789abcdef"


def test_f9_dev_mode_fills_in_the_public_defaults() -> None:
    dev = {"HEDGEROW_DEV": "1"}
    assert GatewayConfig.from_env(dev).api_keys == (DEV_API_KEY,)
    assert DispatcherConfig.from_env(dev).enrollment_tokens == (DEV_ENROLLMENT_TOKEN,)
    assert RegistryConfig.from_env(dev).auth == ServiceAuth(DEV_SERVICE_TOKEN, reflection=True)


@pytest.mark.parametrize(
    ("build", "missing"),
    [
        (lambda env: GatewayConfig.from_env({**env, "HEDGEROW_SERVICE_TOKEN": TOKEN}), "API_KEYS"),
        (
            lambda env: DispatcherConfig.from_env({**env, "HEDGEROW_SERVICE_TOKEN": TOKEN}),
            "ENROLLMENT_TOKENS",
        ),
        (lambda env: RegistryConfig.from_env(env), "SERVICE_TOKEN"),
        (lambda env: NormalizerConfig.from_env(env), "SERVICE_TOKEN"),
        (lambda env: GatewayConfig.from_env({**env, "HEDGEROW_API_KEYS": KEY}), "SERVICE_TOKEN"),
    ],
)
def test_f9_outside_dev_mode_a_missing_secret_stops_the_start(build, missing: str) -> None:
    with pytest.raises(ConfigError, match=f"HEDGEROW_{missing}"):
        build({})


def test_f9_the_public_dev_values_and_short_secrets_are_refused_outside_dev_mode() -> None:
    with pytest.raises(ConfigError, match="public dev default"):
        secrets_from_env(
            {"HEDGEROW_API_KEYS": f"{KEY},{DEV_API_KEY}"}, "HEDGEROW_API_KEYS", (DEV_API_KEY,)
        )
    with pytest.raises(ConfigError, match="at least 16"):
        secrets_from_env({"HEDGEROW_API_KEYS": "short"}, "HEDGEROW_API_KEYS", (DEV_API_KEY,))


def test_f9_configured_secrets_are_used_and_reflection_stays_off() -> None:
    env = {"HEDGEROW_API_KEYS": f"{KEY}, sk-live-second-key-000", "HEDGEROW_SERVICE_TOKEN": TOKEN}
    config = GatewayConfig.from_env(env)
    assert config.api_keys == (KEY, "sk-live-second-key-000")
    assert config.auth == ServiceAuth(TOKEN, reflection=False)
    assert ServiceAuth.from_env({**env, "HEDGEROW_GRPC_REFLECTION": "1"}).reflection
