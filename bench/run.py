"""`python -m bench run`: every scenario, direct upstream (a) against the full Hedgerow
stack in front of the same upstream (b), alternating runs, one table, bench/REPORT.md."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.loadgen import Result, run_load
from stack.launcher import API_KEY, ProviderSpec, Stack, free_port

REPORT = Path(__file__).resolve().parent / "REPORT.md"
MODEL = "hedgerow-sim-1"
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    scenario: str
    metric: str
    direct: float
    hedgerow: float
    unit: str

    @property
    def ratio(self) -> str:
        if self.direct != self.direct or self.hedgerow != self.hedgerow or not self.direct:
            return "-"
        return f"{self.hedgerow / self.direct:.2f}"


@contextlib.contextmanager
def upstream(*args: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--port", str(port), *args])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(5)


def provider(name: str, url: str, concurrency: int = 256) -> ProviderSpec:
    return ProviderSpec(
        name,
        env={
            "HEDGEROW_ENGINE": "openai",
            "HEDGEROW_UPSTREAM_URL": url,
            "HEDGEROW_MAX_CONCURRENCY": str(concurrency),
        },
    )


# One API key drives every load: its per-key concurrency and rate limits are off here.
BASE_ENV = {
    "HEDGEROW_LOG_LEVEL": "warning",
    "HEDGEROW_QUEUE_MAX_DEPTH": "10000",
    "HEDGEROW_KEY_CONCURRENCY": "0",
    "HEDGEROW_RATE_LIMIT_RPS": "0",
}


def body(tokens: int) -> dict[str, object]:
    return {
        "model": MODEL,
        "stream": True,
        "max_tokens": tokens,
        "messages": [{"role": "user", "content": "benchmark"}],
    }


def load(url: str, tokens: int, concurrency: int, requests: int, key: str | None) -> Result:
    return asyncio.run(
        run_load(url, body(tokens), concurrency=concurrency, requests=requests, api_key=key)
    )


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def alternate(
    direct_url: str, stack_url: str, tokens: int, concurrency: int, requests: int, rounds: int = 2
) -> tuple[Result, Result]:
    """Run a, b, a, b ... so both see the same machine conditions; merge the samples."""
    a_all: list[Result] = []
    b_all: list[Result] = []
    load(direct_url, tokens, concurrency, concurrency * 2, None)  # warm up
    load(stack_url, tokens, concurrency, concurrency * 2, API_KEY)
    for _ in range(rounds):
        a_all.append(load(direct_url, tokens, concurrency, requests // rounds, None))
        b_all.append(load(stack_url, tokens, concurrency, requests // rounds, API_KEY))
    return merge(a_all), merge(b_all)


def merge(results: list[Result]) -> Result:
    return Result([s for r in results for s in r.samples], sum(r.wall_s for r in results))


def scenario_overhead(rows: list[Row], quick: bool) -> None:
    with (
        upstream("--tokens", "16") as up,
        Stack([provider("bench-a", up), provider("bench-b", up)], env=BASE_ENV) as stack,
    ):
        direct = f"{up}/v1/chat/completions"
        via = f"{stack.base_url}/chat/completions"
        for c in (1, 8, 64):
            n = (100 if quick else 400) if c == 1 else (c * (10 if quick else 30))
            a, b = alternate(direct, via, 16, c, n)
            print(
                f"  overhead c={c}: direct p50 {a.ttfc_ms(0.5):.2f} ms, hedgerow p50 "
                f"{b.ttfc_ms(0.5):.2f} ms, errors {a.errors}/{b.errors}",
                flush=True,
            )
            for q, label in ((0.5, "p50"), (0.99, "p99")):
                rows.append(
                    Row(
                        f"1. time to first content, c={c}",
                        f"{label} (added {b.ttfc_ms(q) - a.ttfc_ms(q):.2f} ms)",
                        a.ttfc_ms(q),
                        b.ttfc_ms(q),
                        "ms",
                    )
                )


def scenario_throughput(rows: list[Row], quick: bool) -> None:
    tokens, c = 256, 16
    n = 64 if quick else 256
    with (
        upstream("--tokens", str(tokens)) as up,
        Stack([provider("bench-a", up)], env=BASE_ENV) as stack,
    ):
        direct = f"{up}/v1/chat/completions"
        via = f"{stack.base_url}/chat/completions"
        load(via, tokens, c, c, API_KEY)
        pids = {name: p.popen.pid for name, p in stack.processes.items()}
        before = {name: cpu_s(pid) for name, pid in pids.items()}
        a, b = alternate(direct, via, tokens, c, n, rounds=1)
        after = {name: cpu_s(pid) for name, pid in pids.items()}
        print(
            f"  throughput: direct {a.events_per_s:.0f} chunks/s, hedgerow {b.events_per_s:.0f} "
            f"chunks/s, errors {a.errors}/{b.errors}",
            flush=True,
        )
        rows.append(
            Row("2. saturation, 256-token streams, c=16", "requests/s", a.rps, b.rps, "req/s")
        )
        rows.append(
            Row(
                "2. saturation, 256-token streams, c=16",
                "chunks relayed/s",
                a.events_per_s,
                b.events_per_s,
                "chunks/s",
            )
        )
        for name in ("gateway", "dispatcher", "bench-a", "registry", "normalizer"):
            ms = (after[name] - before[name]) / max(1, len(b.ok)) * 1000
            rows.append(Row("2. saturation, CPU per request", name, float("nan"), ms, "ms CPU"))


def scenario_failover(rows: list[Row], quick: bool) -> None:
    env = {**BASE_ENV, "HEDGEROW_BREAKER_THRESHOLD": "1000000"}
    with (
        upstream("--tokens", "16", "--ttft-ms", "5") as good,
        upstream("--tokens", "16", "--fail-before-content") as bad,
        Stack([provider("bench-good", good), provider("bench-bad", bad)], env=env) as stack,
    ):
        direct = f"{good}/v1/chat/completions"
        via = f"{stack.base_url}/chat/completions"
        n = 60 if quick else 200
        a, b = alternate(direct, via, 16, 1, n)
        retried = [s for s in b.ok if s.headers.get("x-attempts") == "2"]
        direct_p50 = a.ttfc_ms(0.5)
        retried_p50 = Result(retried, 1).ttfc_ms(0.5)
        print(
            f"  failover: {len(retried)} retried of {len(b.samples)}, errors {b.errors}", flush=True
        )
        rows.append(
            Row(
                "3. failover (1 of 2 providers dies before content)",
                f"retried p50 ttfc ({len(retried)} retried, {b.errors} errors; overhead "
                f"{retried_p50 - direct_p50:.1f} ms)",
                direct_p50,
                retried_p50,
                "ms",
            )
        )


def scenario_hedging(rows: list[Row], quick: bool) -> None:
    """10 providers; `slow` of them take 20x longer to first content (25 ms vs 500 ms). The
    first-content budget is configuration, set here to suit this fleet (80 ms + 1 ms per
    prompt token; the race starts at half of it)."""
    n = 100 if quick else 300
    runs: dict[tuple[int, str], tuple[Result, float]] = {}
    plan = [(1, "off"), (1, "on"), (0, "on"), (3, "on")]
    with (
        upstream("--tokens", "8", "--ttft-ms", "25") as fast,
        upstream("--tokens", "8", "--ttft-ms", "500") as slow_url,
    ):
        for slow, mode in plan:
            specs = [provider(f"bench-{i}", fast) for i in range(10 - slow)]
            specs += [provider(f"bench-slow-{i}", slow_url) for i in range(slow)]
            env = {
                **BASE_ENV,
                "HEDGEROW_TTFT_BASE_S": "0.08",
                "HEDGEROW_SPECULATIVE_RATIO": "0.5" if mode == "on" else "1.0",
                "HEDGEROW_NEAR_TIE_WINDOW_S": "3",
            }
            with Stack(specs, env=env) as stack:
                r = load(f"{stack.base_url}/chat/completions", 8, 4, n, API_KEY)
                metrics = httpx.get(
                    f"http://127.0.0.1:{stack.ports.dispatcher_metrics}/metrics"
                ).text
                backups = sum(
                    float(line.split()[-1])
                    for line in metrics.splitlines()
                    if line.startswith("dispatcher_speculative_dispatches_total")
                )
                runs[(slow, mode)] = (r, backups / max(1, len(r.samples)))
                print(
                    f"  hedging {slow * 10}% slow, race {mode}: p99 {r.ttfc_ms(0.99):.0f} ms, "
                    f"extra {runs[(slow, mode)][1]:.1%}, errors {r.errors}",
                    flush=True,
                )
    off, on = runs[(1, "off")][0], runs[(1, "on")][0]
    label = "4. hedging (10% providers 20x slower); a = race off, b = race on"
    rows.append(Row(label, "p50 ttfc", off.ttfc_ms(0.5), on.ttfc_ms(0.5), "ms"))
    rows.append(Row(label, "p99 ttfc", off.ttfc_ms(0.99), on.ttfc_ms(0.99), "ms"))
    rows.append(
        Row(label, "extra dispatches", runs[(1, "off")][1] * 100, runs[(1, "on")][1] * 100, "%")
    )
    for slow in (0, 3):
        r, extra = runs[(slow, "on")]
        sweep = f"4. race on, {slow * 10}% providers 20x slower"
        rows.append(Row(sweep, "p99 ttfc", float("nan"), r.ttfc_ms(0.99), "ms"))
        rows.append(Row(sweep, "extra dispatches", float("nan"), extra * 100, "%"))


def scenario_scale(rows: list[Row], quick: bool) -> None:
    from bench.fleet import measure_fleet

    count = 200 if quick else 1000
    # One enrollment token and one address for the whole fleet: the per-token and
    # per-address caps (threat model) are raised to the fleet's size for this scenario.
    fleet_env = {
        "HEDGEROW_OFFLINE_AFTER_S": "60",
        "HEDGEROW_MAX_LINKS_PER_TOKEN": str(count + 10),
        "HEDGEROW_MAX_MODELS_PER_TOKEN": str(count + 10),
        "HEDGEROW_MAX_PENDING_HANDSHAKES": "200",
        "HEDGEROW_MAX_PENDING_HANDSHAKES_PER_ADDR": "200",
    }
    with Stack([], env={**BASE_ENV, **fleet_env}) as stack:
        pid = stack.processes["dispatcher"].popen.pid
        before = rss_mb(pid)
        select_ms = asyncio.run(measure_fleet(stack, count))
        after = rss_mb(pid)
    rows.append(
        Row(
            f"5. scale: {count} provider connections",
            "dispatcher RSS per connection",
            float("nan"),
            (after - before) * 1024 / count,
            "KiB",
        )
    )
    rows.append(
        Row(
            f"5. scale: {count} provider connections",
            "Reserve+Release p50 (Slots stream)",
            float("nan"),
            select_ms[0],
            "ms",
        )
    )
    rows.append(
        Row(
            f"5. scale: {count} provider connections",
            "Reserve+Release p99 (Slots stream)",
            float("nan"),
            select_ms[1],
            "ms",
        )
    )


SCENARIOS = {
    "overhead": scenario_overhead,
    "throughput": scenario_throughput,
    "failover": scenario_failover,
    "hedging": scenario_hedging,
    "scale": scenario_scale,
}


def _num(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"


def report(rows: list[Row], elapsed_s: float) -> str:
    out = [
        "# Hedgerow benchmark report",
        "",
        "Generated by `python -m bench run` (`make bench`); a = the upstream engine directly, "
        "b = the full Hedgerow stack (gateway, normalizer, registry, dispatcher, provider agent "
        "with the `openai` engine) in front of the same upstream, runs alternated a/b in one "
        "invocation. Numbers come from a shared, noisy machine: read ratios, not absolutes.",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed_s:.0f} s",
        "",
        "| scenario | metric | a: direct | b: hedgerow | unit | b/a |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        cells = [r.scenario, r.metric, _num(r.direct), _num(r.hedgerow), r.unit, r.ratio]
        out.append("| " + " | ".join(cells) + " |")
    checks = targets(rows)
    if checks:
        out += ["", "Targets (issue 9), as measured in this run:", ""]
        out += [f"- {'met' if ok else 'NOT met'}: {text}" for ok, text in checks]
    return "\n".join(out) + "\n"


def targets(rows: list[Row]) -> list[tuple[bool, str]]:
    """The issue's targets, checked against this run's rows (those that ran)."""

    def find(scenario: str, metric: str) -> Row | None:
        for r in rows:
            if r.scenario.startswith(scenario) and r.metric.startswith(metric):
                return r
        return None

    checks: list[tuple[bool, str]] = []
    for q, limit in (("p50", 3.0), ("p99", 10.0)):
        r = find("1. time to first content, c=1", q)
        if r is not None:
            added = r.hedgerow - r.direct
            checks.append(
                (
                    added < limit,
                    f"added time to first content at c=1, {q} {added:.2f} ms < {limit:g} ms",
                )
            )
    r = find("2. saturation", "chunks relayed/s")
    if r is not None:
        checks.append((r.hedgerow >= 10_000, f"relay {r.hedgerow:,.0f} chunks/s >= 10,000"))
    r = find("3. failover", "retried")
    if r is not None:
        overhead = r.hedgerow - r.direct
        checks.append((overhead < 20, f"failover overhead {overhead:.1f} ms < 20 ms"))
    p99, extra = find("4. hedging", "p99"), find("4. hedging", "extra")
    if p99 is not None and extra is not None and p99.hedgerow:
        lower = p99.direct / p99.hedgerow
        checks.append(
            (
                lower >= 5 and extra.hedgerow <= 15,
                f"hedging p99 {lower:.1f}x lower (>= 5x) for {extra.hedgerow:.1f} % extra "
                "dispatches (<= 15 %)",
            )
        )
    return checks


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench run")
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--no-report", action="store_true", help="print only; keep REPORT.md")
    ns = parser.parse_args(argv)
    rows: list[Row] = []
    start = time.monotonic()
    for name, scenario in SCENARIOS.items():
        if ns.only and name not in ns.only:
            continue
        print(f"scenario {name}...", flush=True)
        scenario(rows, ns.quick)
    text = report(rows, time.monotonic() - start)
    print(text)
    if not ns.no_report:
        REPORT.write_text(text)
        print(f"wrote {REPORT}")
    return 0
