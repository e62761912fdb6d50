"""Starts the whole Hedgerow stack as real OS processes on 127.0.0.1 (used by `make run`,
the e2e tests and the benchmarks).

Every service is its own process started with `python -m <package>`; configuration goes
through `HEDGEROW_*` env exactly as in production. Logs go to one file per process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from contract import registry_pb2, registry_pb2_grpc
from svckit.auth import DEV_SERVICE_TOKEN, TOKEN_VAR, ServiceAuth, sync_channel
from svckit.parent import ENV as PARENT_ENV

MODELS_DIR = Path(__file__).resolve().parent / "models"
API_KEY = "hedgerow-dev-key"
ENROLLMENT_TOKEN = "hedgerow-dev-enrollment"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    gateway: int
    normalizer: int
    registry: int
    dispatcher: int
    link: int
    normalizer_metrics: int
    registry_metrics: int
    dispatcher_metrics: int

    @classmethod
    def defaults(cls) -> Ports:
        return cls(8080, 50061, 50062, 50063, 8765, 9161, 9162, 9163)

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in range(8)))


@dataclass
class ProviderSpec:
    name: str
    models_dir: Path = MODELS_DIR
    version: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # How it was started, so `Stack.restart` can start it again the same way.
    module: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class StackError(RuntimeError):
    pass


class Stack:
    """The running stack. Use as a context manager, or call start() / stop()."""

    def __init__(
        self,
        providers: list[ProviderSpec] | None = None,
        *,
        ports: Ports | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.ports = ports or Ports.free()
        self.providers = (
            providers if providers is not None else [ProviderSpec("sim-a"), ProviderSpec("sim-b")]
        )
        self.extra_env = dict(env or {})
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="hedgerow-"))
        self.processes: dict[str, Process] = {}

    # --- addresses ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.gateway}/v1"

    @property
    def link_url(self) -> str:
        return f"ws://127.0.0.1:{self.ports.link}"

    @property
    def registry_addr(self) -> str:
        return f"127.0.0.1:{self.ports.registry}"

    def env(self) -> dict[str, str]:
        p = self.ports
        base = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEROW_")}
        base.update(
            {
                "PYTHONUNBUFFERED": "1",
                PARENT_ENV: str(os.getpid()),
                "HEDGEROW_GATEWAY_PORT": str(p.gateway),
                "HEDGEROW_NORMALIZER_PORT": str(p.normalizer),
                "HEDGEROW_NORMALIZER_METRICS_PORT": str(p.normalizer_metrics),
                "HEDGEROW_REGISTRY_PORT": str(p.registry),
                "HEDGEROW_REGISTRY_METRICS_PORT": str(p.registry_metrics),
                "HEDGEROW_DISPATCHER_PORT": str(p.dispatcher),
                "HEDGEROW_DISPATCHER_METRICS_PORT": str(p.dispatcher_metrics),
                "HEDGEROW_LINK_PORT": str(p.link),
                "HEDGEROW_NORMALIZER_ADDR": f"127.0.0.1:{p.normalizer}",
                "HEDGEROW_REGISTRY_ADDR": self.registry_addr,
                "HEDGEROW_DISPATCHER_ADDR": f"127.0.0.1:{p.dispatcher}",
                "HEDGEROW_DISPATCHER_URL": self.link_url,
                "HEDGEROW_API_KEYS": API_KEY,
                "HEDGEROW_ENROLLMENT_TOKENS": ENROLLMENT_TOKEN,
                "HEDGEROW_ENROLLMENT_TOKEN": ENROLLMENT_TOKEN,
                # The dev stack: public default secrets are allowed (docs/threat-model.md).
                "HEDGEROW_DEV": "1",
            }
        )
        base.update(self.extra_env)
        return base

    # --- lifecycle ---------------------------------------------------------------

    def _spawn(
        self, name: str, module: str, env: Mapping[str, str], args: tuple[str, ...] = ()
    ) -> Process:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        proc = Process(name, popen, log_path, module, dict(env), args)
        self.processes[name] = proc
        return proc

    def start(self, timeout_s: float = 30.0) -> Stack:
        env = self.env()
        try:
            self._spawn("normalizer", "normalizer_svc", env)
            self._spawn("registry", "registry_svc", env)
            self._wait_grpc("normalizer", self.ports.normalizer, timeout_s)
            self._wait_grpc("registry", self.ports.registry, timeout_s)
            self._spawn("dispatcher", "dispatcher_svc", env)
            self._wait_grpc("dispatcher", self.ports.dispatcher, timeout_s)
            self._spawn("gateway", "gateway", env)
            for spec in self.providers:
                self.start_provider(spec, wait=False)
            self._wait_http("gateway", f"http://127.0.0.1:{self.ports.gateway}/healthz", timeout_s)
            self.wait_providers([s.name for s in self.providers], timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def start_provider(
        self, spec: ProviderSpec, *, wait: bool = True, timeout_s: float = 30.0
    ) -> Process:
        env = self.env()
        env.update(
            {
                "HEDGEROW_PROVIDER_ID": spec.name,
                "HEDGEROW_MODEL_DIR": str(spec.models_dir),
                # Each provider's identity key lives with this run, not in the user's home.
                "HEDGEROW_KEY_FILE": str(self.log_dir / "keys" / f"{spec.name}.key"),
            }
        )
        if spec.version is not None:
            env["HEDGEROW_PROVIDER_VERSION"] = spec.version
        env.update(spec.env)
        proc = self._spawn(spec.name, "provider_agent", env, spec.args)
        if wait:
            self.wait_providers([spec.name], timeout_s)
        return proc

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM everything (providers first), wait, then SIGKILL stragglers."""
        order = sorted(
            self.processes.values(),
            key=lambda p: p.name in {"normalizer", "registry", "dispatcher", "gateway"},
        )
        for proc in order:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in order:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.popen.wait(remaining)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def kill(self, name: str) -> None:
        """SIGKILL one process (a provider dying without a goodbye)."""
        proc = self.processes[name]
        proc.popen.kill()
        proc.popen.wait()

    def terminate(self, name: str, timeout_s: float = 10.0) -> None:
        """SIGTERM one process and wait for it (a clean stop: a provider says Goodbye,
        a service shuts down gracefully); SIGKILL if it does not exit in time."""
        proc = self.processes[name]
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()

    def respawn(self, name: str, *, wait: bool = True, timeout_s: float = 30.0) -> Process:
        """Start a stopped process again with the same module, env and args (so on the
        same ports); with `wait`, until it is ready (see `wait_ready`)."""
        old = self.processes[name]
        if old.alive():
            raise StackError(f"{name} is still running; terminate or kill it first")
        self._spawn(name, old.module, old.env, old.args)
        if wait:
            self.wait_ready(name, timeout_s)
        return self.processes[name]

    def wait_ready(self, name: str, timeout_s: float = 30.0) -> None:
        """Wait until a service answers its health check, or a provider is registered."""
        grpc_ports = {
            "normalizer": self.ports.normalizer,
            "registry": self.ports.registry,
            "dispatcher": self.ports.dispatcher,
        }
        if name in grpc_ports:
            self._wait_grpc(name, grpc_ports[name], timeout_s)
        elif name == "gateway":
            self._wait_http(name, f"http://127.0.0.1:{self.ports.gateway}/healthz", timeout_s)
        else:
            self.wait_providers([name], timeout_s)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- readiness ---------------------------------------------------------------

    def _check_alive(self, name: str) -> None:
        proc = self.processes[name]
        if not proc.alive():
            raise StackError(f"{name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")

    def _wait_grpc(self, name: str, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                self._check_alive(name)
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise StackError(f"{name} not healthy after {timeout_s}s")
                time.sleep(0.05)

    def _wait_http(self, name: str, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive(name)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=0.5).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise StackError(f"{name} not healthy after {timeout_s}s")
            time.sleep(0.05)

    def registry_channel(self) -> Any:
        """A blocking channel to the registry that carries the stack's service token."""
        token = self.extra_env.get(TOKEN_VAR) or DEV_SERVICE_TOKEN
        return sync_channel(self.registry_addr, ServiceAuth(token=token))

    def registry_stats(self) -> registry_pb2.StatsReply:
        with self.registry_channel() as channel:
            reply: registry_pb2.StatsReply = registry_pb2_grpc.RegistryStub(channel).Stats(
                registry_pb2.StatsRequest(), timeout=2.0
            )
            return reply

    def wait_providers(
        self, names: list[str], timeout_s: float = 30.0, *, online: bool = True
    ) -> None:
        """Wait until every named provider is (or, with online=False, is no longer) registered."""
        deadline = time.monotonic() + timeout_s
        while True:
            for name in names:
                if online and name in self.processes:
                    self._check_alive(name)
            ids = set(self.registry_stats().online_provider_ids)
            if all((n in ids) == online for n in names):
                return
            if time.monotonic() > deadline:
                state = "online" if online else "offline"
                raise StackError(
                    f"providers {names} not {state} after {timeout_s}s (online: {sorted(ids)})"
                )
            time.sleep(0.05)

    def models(self) -> list[str]:
        with self.registry_channel() as channel:
            reply = registry_pb2_grpc.RegistryStub(channel).ListModels(
                registry_pb2.ListModelsRequest(), timeout=2.0
            )
            return list(reply.models)
