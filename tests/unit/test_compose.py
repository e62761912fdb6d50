"""docker-compose.yml stays true to the code: no Docker engine runs here, so parse and check it."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCES = "\n".join(
    p.read_text()
    for pkg in (
        "gateway",
        "normalizer_svc",
        "registry_svc",
        "dispatcher_svc",
        "provider_agent",
        "svckit",
    )
    for p in (ROOT / pkg).rglob("*.py")
)


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def hedgerow_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if name != "redis"}


def test_every_service_command_runs_a_real_module() -> None:
    services = hedgerow_services()
    assert {"normalizer", "registry", "dispatcher", "gateway", "provider-a", "provider-b"} <= set(
        services
    )
    for name, svc in services.items():
        cmd = svc["command"]
        assert cmd[:2] == ["python", "-m"], name
        module = cmd[2]
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{name}: {module}"


def test_every_env_setting_is_read_by_the_code() -> None:
    for name, svc in hedgerow_services().items():
        for key in svc["environment"]:
            assert re.search(rf'"{key}"', SOURCES), f"{name}: {key} is read by no config"


def test_ports_and_health_checks_match_the_configured_ports() -> None:
    services = hedgerow_services()
    for name, svc in services.items():
        env = svc["environment"]
        ports = [str(v) for k, v in env.items() if k.endswith("_PORT") and "METRICS" not in k]
        for mapping in svc.get("ports", []):
            _addr, _host, container = mapping.rsplit(":", 2)
            assert container in ports, f"{name}: published {container} is no configured port"
        check = svc.get("healthcheck", {}).get("test")
        if check:
            target = check[-1]
            assert any(target.endswith(f":{p}") or f":{p}/" in target for p in ports), name
    # Addresses other services dial must point at the right service's port.
    env = services["gateway"]["environment"]
    for key, svc_name, port_key in [
        ("HEDGEROW_NORMALIZER_ADDR", "normalizer", "HEDGEROW_NORMALIZER_PORT"),
        ("HEDGEROW_REGISTRY_ADDR", "registry", "HEDGEROW_REGISTRY_PORT"),
        ("HEDGEROW_DISPATCHER_ADDR", "dispatcher", "HEDGEROW_DISPATCHER_PORT"),
    ]:
        host, port = env[key].split(":")
        assert host == svc_name and port == services[svc_name]["environment"][port_key]
    link = f"ws://dispatcher:{services['dispatcher']['environment']['HEDGEROW_LINK_PORT']}"
    for name in ("provider-a", "provider-b"):
        assert services[name]["environment"]["HEDGEROW_DISPATCHER_URL"] == link


def test_defaults_in_code_match_compose_ports() -> None:
    from dispatcher_svc.config import DispatcherConfig
    from gateway.config import GatewayConfig
    from normalizer_svc.config import NormalizerConfig
    from registry_svc.config import RegistryConfig

    services = hedgerow_services()
    assert (
        str(NormalizerConfig().port)
        == services["normalizer"]["environment"]["HEDGEROW_NORMALIZER_PORT"]
    )
    assert (
        str(RegistryConfig().port) == services["registry"]["environment"]["HEDGEROW_REGISTRY_PORT"]
    )
    assert (
        str(DispatcherConfig().port)
        == services["dispatcher"]["environment"]["HEDGEROW_DISPATCHER_PORT"]
    )
    assert (
        str(DispatcherConfig().link_port)
        == services["dispatcher"]["environment"]["HEDGEROW_LINK_PORT"]
    )
    assert str(GatewayConfig().port) == services["gateway"]["environment"]["HEDGEROW_GATEWAY_PORT"]


def test_provider_model_dir_exists_in_the_image() -> None:
    for name in ("provider-a", "provider-b"):
        cmd = hedgerow_services()[name]["command"]
        model_dir = cmd[cmd.index("--model-dir") + 1]
        assert model_dir.startswith("/app/")
        assert (ROOT / model_dir.removeprefix("/app/")).is_dir()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and "COPY stack stack" in dockerfile


SECRETS = ("HEDGEROW_API_KEYS", "HEDGEROW_ENROLLMENT_TOKENS", "HEDGEROW_SERVICE_TOKEN")


def test_f9_no_secret_is_written_in_compose_and_dev_mode_is_never_on() -> None:
    for name, svc in hedgerow_services().items():
        env = svc["environment"]
        assert "HEDGEROW_DEV" not in env, name
        for key in (*SECRETS, "HEDGEROW_ENROLLMENT_TOKEN"):
            if key in env:
                assert env[key] == f"${{{key}:?set {key}}}", f"{name}: {key} must come from env"


def test_f9_each_service_gets_only_the_secrets_it_uses() -> None:
    services = hedgerow_services()
    needs = {
        "gateway": {"HEDGEROW_API_KEYS", "HEDGEROW_SERVICE_TOKEN"},
        "dispatcher": {"HEDGEROW_ENROLLMENT_TOKENS", "HEDGEROW_SERVICE_TOKEN"},
        "registry": {"HEDGEROW_SERVICE_TOKEN"},
        "normalizer": {"HEDGEROW_SERVICE_TOKEN"},
        "provider-a": set(),
        "provider-b": set(),
    }
    for name, secrets in needs.items():
        assert set(SECRETS) & set(services[name]["environment"]) == secrets, name


def test_f10_published_ports_bind_loopback_unless_told_otherwise() -> None:
    for name, svc in hedgerow_services().items():
        for mapping in svc.get("ports", []):
            assert mapping.startswith("${HEDGEROW_PUBLISH_ADDR:-127.0.0.1}:"), name


def test_f10_providers_have_no_network_path_to_the_internal_grpc_services() -> None:
    services = hedgerow_services()
    for name in ("provider-a", "provider-b"):
        assert services[name]["networks"] == ["providers"], name
    for name in ("gateway", "normalizer", "registry"):
        assert "providers" not in services[name].get("networks", ["internal"]), name
    # The dispatcher is on both: its gRPC listens only on its internal-network address.
    dispatcher = services["dispatcher"]
    address = dispatcher["networks"]["internal"]["ipv4_address"]
    assert dispatcher["environment"]["HEDGEROW_DISPATCHER_HOST"] == address
    assert set(dispatcher["networks"]) == {"internal", "providers"}
