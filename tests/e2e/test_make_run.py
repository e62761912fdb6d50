"""Issue 2: `python -m stack` (what `make run` runs) starts everything, prints how to call
it, serves, and Ctrl-C stops every process with no orphans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def assert_all_gone(pids: list[int], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "orphaned service processes"


@contextmanager
def launched() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m stack --free-ports`, up to its banner; killed on the way out if still up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEROW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stack", "--free-ports"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + 60
    try:
        for line in proc.stdout:
            banner.append(line)
            if "Press Ctrl-C" in line or time.monotonic() > deadline:
                break
        yield proc, "".join(banner)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stack_prints_usage_serves_and_stops_without_orphans(sig: signal.Signals) -> None:
    with launched() as (proc, text):
        url = re.search(r"base URL : (\S+)", text)
        assert url, text
        assert "API key  : hedgerow-dev-key" in text
        assert "hedgerow-sim-1" in text and "curl -N" in text
        assert "from openai import OpenAI" in text
        r = httpx.post(
            f"{url.group(1)}/chat/completions",
            timeout=20,
            headers={"Authorization": "Bearer hedgerow-dev-key"},
            json={
                "model": "hedgerow-sim-1",
                "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert r.status_code == 200
        kids = children(proc.pid)
        assert len(kids) == 6, "normalizer, registry, dispatcher, gateway and two providers"
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        assert_all_gone(kids)


def test_services_exit_when_the_launcher_is_killed() -> None:
    with launched() as (proc, _):
        kids = children(proc.pid)
        assert len(kids) == 6
        proc.kill()  # no chance to clean up: the services must notice on their own
        proc.wait()
        assert_all_gone(kids)
