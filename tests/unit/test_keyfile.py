"""F5, the agent's side: the key file that keeps a provider's identity across restarts, and
the agent refusing at start what the dispatcher would refuse at the door (F4)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from provider_agent.config import AgentConfig
from provider_agent.keyfile import default_key_file, load_or_create_key
from svckit.env import ConfigError


def test_f5_key_file_is_created_0600_in_a_0700_directory_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "provider.key"
    keys, created = load_or_create_key(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert len(text) == 65 and text.endswith("\n") and bytes.fromhex(text)
    again, created = load_or_create_key(path)
    assert not created
    assert again.public_bytes == keys.public_bytes
    assert sorted(p.name for p in path.parent.iterdir()) == ["provider.key"], "no temp left"


def test_f5_key_file_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path / "provider.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "provider.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606, 0o620])
def test_f5_a_key_file_others_may_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "provider.key"
    load_or_create_key(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(path)


@pytest.mark.parametrize("content", ["", "zz" * 32, "ab" * 31, "ab" * 33, "not a key\n"])
def test_f5_a_key_file_without_a_key_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "provider.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="32-byte hex key"):
        load_or_create_key(path)


def test_f5_a_directory_in_place_of_the_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "provider.key"
    path.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="regular file"):
        load_or_create_key(path)


def test_f5_agents_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "provider.key"
    keys: list[bytes] = []
    created: list[bool] = []
    gate = threading.Barrier(8)

    def start() -> None:
        gate.wait()
        pair, made = load_or_create_key(path)
        keys.append(pair.public_bytes)
        created.append(made)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys) == 8
    assert created.count(True) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["provider.key"]


def test_f5_default_key_file_is_under_the_users_config_home() -> None:
    assert default_key_file({"XDG_CONFIG_HOME": "/x/cfg", "HOME": "/home/u"}) == Path(
        "/x/cfg/hedgerow/provider.key"
    )
    assert default_key_file({"HOME": "/home/u"}) == Path("/home/u/.config/hedgerow/provider.key")


def test_f5_key_file_setting_and_default(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert AgentConfig.from_env(env).key_file == tmp_path / ".config/hedgerow/provider.key"
    env["HEDGEROW_KEY_FILE"] = str(tmp_path / "k")
    assert AgentConfig.from_env(env).key_file == tmp_path / "k"
    assert AgentConfig.from_env(env, key_file=tmp_path / "flag").key_file == tmp_path / "flag"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HEDGEROW_PROVIDER_ID", "gpu-1\r\nX-Evil: 1"),
        ("HEDGEROW_PROVIDER_ID", "gpu 1"),
        ("HEDGEROW_PROVIDER_ID", "g" * 129),
        ("HEDGEROW_PROVIDER_VERSION", "0.7.0\r\nX-Evil: 1"),
        ("HEDGEROW_PROVIDER_VERSION", "v" * 65),
        ("HEDGEROW_HARDWARE", "gpu\x1b[2J"),
        ("HEDGEROW_MAX_CONCURRENCY", "257"),
    ],
)
def test_f4_the_agent_refuses_at_start_what_the_door_would_refuse(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = {"HOME": str(tmp_path), "HEDGEROW_PROVIDER_ID": "gpu-1", variable: value}
    with pytest.raises(ConfigError):
        AgentConfig.from_env(env)
