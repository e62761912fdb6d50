"""Every service turns gRPC's EventEngine experiments off before grpc is imported (a
measured latency choice, bench/HISTORY.md), unless the operator chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from svckit.grpcenv import DEFAULT_EXPERIMENTS, TooLate, tune_grpc


def test_sets_the_default_only_when_the_operator_did_not() -> None:
    env: dict[str, str] = {}
    saved = sys.modules.pop("grpc", None)  # this test process imported grpc long ago
    try:
        tune_grpc(env)
        assert env == {"GRPC_EXPERIMENTS": DEFAULT_EXPERIMENTS}
        chosen = {"GRPC_EXPERIMENTS": ""}
        tune_grpc(chosen)
        assert chosen == {"GRPC_EXPERIMENTS": ""}, "an operator's value (even empty) wins"
    finally:
        if saved is not None:
            sys.modules["grpc"] = saved


def test_too_late_once_grpc_is_imported() -> None:
    import grpc  # noqa: F401

    with pytest.raises(TooLate):
        tune_grpc({})


@pytest.mark.parametrize("module", ["gateway", "dispatcher_svc", "registry_svc", "normalizer_svc"])
def test_each_service_entry_tunes_grpc_before_importing_it(module: str) -> None:
    """Run the entry module's import preamble the way `python -m` does, with a check that
    grpc is not yet imported when tune_grpc runs (TooLate would say otherwise)."""
    probe = (
        "import runpy, sys, svckit.grpcenv as g\n"
        "seen = []\n"
        "real = g.tune_grpc\n"
        "def spy(*a, **k):\n"
        "    seen.append('grpc' in sys.modules)\n"
        "    real(*a, **k)\n"
        "    raise SystemExit(0)\n"
        "g.tune_grpc = spy\n"
        f"sys.argv = ['{module}']\n"
        "try:\n"
        f"    runpy.run_module('{module}', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert seen == [False], seen\n"
        "import os; print(os.environ['GRPC_EXPERIMENTS'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    )
    assert out.stdout.strip() == DEFAULT_EXPERIMENTS
