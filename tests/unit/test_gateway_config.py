"""The edge's limits as settings (A11, A12, A14, A17): on by default, each configurable, a
bad value stops the start naming its variable."""

from __future__ import annotations

import pytest

from gateway.config import GatewayConfig
from gateway.limits import EdgeLimits
from svckit.env import ConfigError

PROD = {"HEDGEROW_API_KEYS": "sk-live-0123456789abcdef", "HEDGEROW_SERVICE_TOKEN": "t" * 24}


def test_a11_a12_a14_limits_are_on_by_default() -> None:
    config = GatewayConfig.from_env(PROD)
    assert config.rate_limit_rps == 50 and config.rate_limit_burst == 100
    assert config.key_concurrency == 32
    assert config.edge_limits == EdgeLimits(
        max_connections=1000,
        header_timeout_s=10,
        body_idle_timeout_s=30,
        body_timeout_s=300,
        max_header_bytes=65536,
    )
    assert config.max_listed_models == 1000


def test_a11_dev_mode_turns_only_the_rate_limit_off_by_default() -> None:
    dev = GatewayConfig.from_env({"HEDGEROW_DEV": "1"})
    assert dev.rate_limit_rps == 0
    assert dev.key_concurrency == 32
    explicit = GatewayConfig.from_env({"HEDGEROW_DEV": "1", "HEDGEROW_RATE_LIMIT_RPS": "5"})
    assert explicit.rate_limit_rps == 5


def test_a12_a14_each_limit_is_configurable() -> None:
    config = GatewayConfig.from_env(
        {
            **PROD,
            "HEDGEROW_KEY_CONCURRENCY": "0",
            "HEDGEROW_KEY_CONCURRENCY_LIMITS": "batch=4",
            "HEDGEROW_MAX_CONNECTIONS": "50",
            "HEDGEROW_HEADER_TIMEOUT_S": "2",
            "HEDGEROW_BODY_IDLE_TIMEOUT_S": "3",
            "HEDGEROW_BODY_TIMEOUT_S": "4",
            "HEDGEROW_MAX_HEADER_BYTES": "8192",
            "HEDGEROW_MAX_LISTED_MODELS": "7",
        }
    )
    assert config.key_concurrency == 0 and config.key_concurrency_limits == "batch=4"
    assert config.edge_limits == EdgeLimits(50, 2.0, 3.0, 4.0, 8192)
    assert config.max_listed_models == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HEDGEROW_KEY_CONCURRENCY_LIMITS", "batch=-1"),
        ("HEDGEROW_KEY_CONCURRENCY", "x"),
        ("HEDGEROW_MAX_CONNECTIONS", "0"),
        ("HEDGEROW_HEADER_TIMEOUT_S", "0"),
        ("HEDGEROW_BODY_IDLE_TIMEOUT_S", "-1"),
        ("HEDGEROW_MAX_HEADER_BYTES", "10"),
        ("HEDGEROW_MAX_LISTED_MODELS", "0"),
    ],
)
def test_a12_a14_a_bad_limit_stops_the_start_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        GatewayConfig.from_env({**PROD, name: value})
