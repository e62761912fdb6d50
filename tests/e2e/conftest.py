"""Whole-stack fixtures: real processes started through `stack/`, timeouts shrunk by env."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stack.launcher import API_KEY, ProviderSpec, Stack

FAST_ENV = {
    "HEDGEROW_HEARTBEAT_INTERVAL_S": "0.5",
    "HEDGEROW_OFFLINE_AFTER_S": "2",
    "HEDGEROW_RECONNECT_MIN_S": "0.1",
    "HEDGEROW_RECONNECT_MAX_S": "1",
    "HEDGEROW_SIM_TTFT_S": "0.01",
    "HEDGEROW_SIM_TOKENS_PER_S": "500",
    "HEDGEROW_QUEUE_WAIT_S": "5",
    "HEDGEROW_LOG_LEVEL": "info",
}


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The default stack: two sim providers, shared by tests that do not break it."""
    with Stack([ProviderSpec("sim-a"), ProviderSpec("sim-b")], env=FAST_ENV) as s:
        yield s


@pytest.fixture
def api_key() -> str:
    return API_KEY
