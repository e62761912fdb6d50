"""`python -m bench ab REF`: added time to first content at c=1 of this tree against the
same for git revision REF, measured side by side: both stacks (each with its own upstream)
are up at once and the rounds alternate between them, so both see the same machine. This is
how each before/after row of bench/HISTORY.md was measured.

    python -m bench ab HEAD~1 --requests 300 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.loadgen import quantile

ROOT = Path(__file__).resolve().parents[1]

# Runs inside a source tree: one stack in front of one upstream, then one load round per
# line read on stdin (the number of requests), answering each with one JSON line.
_SIDE = r"""
import json, sys
from bench.run import API_KEY, BASE_ENV, load, provider, upstream
from stack.launcher import Stack
with upstream("--tokens", "16") as up, Stack(
    [provider("bench-a", up), provider("bench-b", up)], env=BASE_ENV
) as stack:
    via = f"{stack.base_url}/chat/completions"
    load(via, 16, 1, 100, API_KEY)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        b = load(via, 16, 1, int(line), API_KEY)
        a = load(f"{up}/v1/chat/completions", 16, 1, 50, None)
        print(json.dumps({"ttfc": [s.ttfc_s * 1000 for s in b.ok], "errors": b.errors,
                          "direct": a.ttfc_ms(0.5)}), flush=True)
"""


class Side:
    def __init__(self, name: str, tree: Path) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SIDE],
            cwd=tree,  # `python -c` and the services it starts import this tree's code
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.ttfc: list[float] = []
        self.errors = 0

    def answer(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                try:
                    parsed: dict[str, object] = json.loads(line)
                except ValueError:
                    continue
                return parsed
        raise SystemExit(f"{self.name}: the stack stopped (exit {self.proc.wait()})")

    def round(self, requests: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{requests}\n")
        self.proc.stdin.flush()
        out = self.answer()
        self.ttfc += out["ttfc"]  # type: ignore[arg-type]
        self.errors += int(out["errors"])  # type: ignore[call-overload]
        return float(out["direct"])  # type: ignore[arg-type]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ab")
    parser.add_argument("ref", help="git revision to compare this tree against")
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    parser.add_argument("--rounds", type=int, default=6)
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hedgerow-ab-") as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), ns.ref],
            check=True,
            capture_output=True,
        )
        try:
            sides = [Side(ns.ref, other), Side("this tree", ROOT)]
            try:
                for side in sides:
                    side.answer()  # stack up and warmed
                direct: list[float] = []
                for r in range(ns.rounds):
                    for side in sides if r % 2 == 0 else sides[::-1]:
                        direct.append(side.round(ns.requests))
                        print(f"  round {r + 1}/{ns.rounds}: {side.name}", flush=True)
            finally:
                for side in sides:
                    side.close()
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                check=False,
                capture_output=True,
            )
    base = statistics.median(direct)
    print(f"direct upstream p50 {base:.2f} ms")
    for side in sides:
        p50, p99 = quantile(side.ttfc, 0.5), quantile(side.ttfc, 0.99)
        print(
            f"{side.name}: added p50 {p50 - base:.2f} ms, p99 {p99 - base:.2f} ms "
            f"({len(side.ttfc)} requests, {side.errors} errors)"
        )
    return 0
