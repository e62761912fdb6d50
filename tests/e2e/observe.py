"""What the dispatch e2e tests look at: SSE framing, the dispatcher's per-attempt log lines,
its Prometheus counters, and the registry's Stats/Explain over gRPC."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from contract import hedgerow_common_pb2, registry_pb2, registry_pb2_grpc
from stack.launcher import Stack

CANCELLED = 0  # the Release status of an attempt given up without blame (no strike)


@dataclass(frozen=True)
class Sse:
    """A parsed chat SSE body: JSON payloads in order, and how many `[DONE]` there were."""

    payloads: list[dict[str, Any]]
    done: int
    done_last: bool

    @classmethod
    def parse(cls, text: str) -> Sse:
        assert text.endswith("\n\n"), f"SSE stream must end with a blank line: {text[-200:]!r}"
        blocks = [block for block in text.split("\n\n") if block]
        data = []
        for block in blocks:
            assert block.startswith("data: "), f"unexpected SSE block {block!r}"
            data.append(block[len("data: ") :])
        payloads = [json.loads(d) for d in data if d != "[DONE]"]
        return cls(payloads, data.count("[DONE]"), bool(data) and data[-1] == "[DONE]")

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [p["error"] for p in self.payloads if "error" in p]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [p for p in self.payloads if "error" not in p]

    @property
    def text(self) -> str:
        return "".join(
            c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c["choices"]
        )

    @property
    def chunk_ids(self) -> set[str]:
        return {c["id"] for c in self.chunks}

    def index_of_error(self) -> int:
        return next(i for i, p in enumerate(self.payloads) if "error" in p)


@dataclass(frozen=True)
class AttemptLog:
    """One dispatcher attempt of a request, from its `attempt sent/cancelled/released` lines."""

    attempt: int
    provider: str
    backup: bool
    cancelled: bool
    released: list[int]  # Release status codes (exactly one when all is well)


class DispatcherLog:
    """Reads the dispatcher's structured log (one JSON object per line)."""

    def __init__(self, stack: Stack) -> None:
        self._path = stack.processes["dispatcher"].log_path

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self._path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def attempts(self, request_id: str) -> list[AttemptLog]:
        """The request's attempts in the order they were sent."""
        sent: dict[int, dict[str, Any]] = {}
        cancelled: set[int] = set()
        released: dict[int, list[int]] = {}
        for r in self.records():
            if r.get("request_id") != request_id:
                continue
            attempt = int(r["attempt"])
            if r["msg"] == "attempt sent":
                sent[attempt] = r
            elif r["msg"] == "attempt cancelled":
                cancelled.add(attempt)
            elif r["msg"] == "attempt released":
                released.setdefault(attempt, []).append(int(r["status"]))
        return [
            AttemptLog(a, r["provider"], bool(r["backup"]), a in cancelled, released.get(a, []))
            for a, r in sorted(sent.items())
        ]

    def wait_attempts(
        self,
        request_id: str,
        done: Callable[[list[AttemptLog]], bool],
        timeout_s: float = 15.0,
    ) -> list[AttemptLog]:
        """Poll until `done(attempts)`; a generous does-not-hang bound, not a timing claim."""
        deadline = time.monotonic() + timeout_s
        while True:
            attempts = self.attempts(request_id)
            if done(attempts) or time.monotonic() > deadline:
                return attempts
            time.sleep(0.05)


def all_released(attempts: list[AttemptLog]) -> bool:
    return bool(attempts) and all(a.released for a in attempts)


def dispatcher_counters(stack: Stack) -> dict[str, float]:
    """`name{labels}` -> value for every dispatcher counter sample."""
    text = httpx.get(f"http://127.0.0.1:{stack.ports.dispatcher_metrics}/metrics").text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("dispatcher_") and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def sent_total(stack: Stack) -> float:
    return dispatcher_counters(stack).get('dispatcher_dispatches_total{outcome="sent"}', 0.0)


def explain(
    stack: Stack, model: str, *, tools: bool = False, allowlist: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Provider id -> the codes of the registry's reasons it cannot take such a request now
    (C7; the servicer appends details in parentheses, dropped here)."""
    with stack.registry_channel() as channel:
        reply = registry_pb2_grpc.RegistryStub(channel).Explain(
            registry_pb2.ExplainRequest(
                model=model,
                traits=hedgerow_common_pb2.Traits(has_tools=tools),
                allowlist=list(allowlist),
            ),
            timeout=2.0,
        )
    return {p.provider_id: [r.split("(")[0] for r in p.reasons] for p in reply.providers}


def wait_idle(stack: Stack, timeout_s: float = 15.0) -> registry_pb2.StatsReply:
    """Wait until the registry holds no slot and no waiter (B12); returns the last Stats."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = stack.registry_stats()
        if (stats.slots_in_use == 0 and stats.queue_depth == 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)
