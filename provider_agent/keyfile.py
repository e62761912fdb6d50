"""The provider's long-term X25519 key, kept in a file so its identity survives restarts (F5).

The dispatcher binds a provider id to the key that first registered it and refuses that id
with any other key while the binding lives (a day after the provider was last seen, by
default). So an agent that made a new key at every start could not come back under its own
id after a restart: the key must persist.

The file (`--key-file`, `HEDGEROW_KEY_FILE`; default `$XDG_CONFIG_HOME/hedgerow/provider.key`,
else `~/.config/hedgerow/provider.key`) holds the 32-byte secret as 64 hex digits and a
newline. It is created on first start with mode 0600 in a directory created 0700, and an
existing one that its group or others may read or write is refused, as ssh refuses a
private key others can read: whoever holds it can read every request sealed to this
provider. Several agents on one machine may share the file (their ids differ; the key is
the machine's); two starting at once agree on one key, because the file appears whole or
not at all (written aside, then hard-linked into place).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from nacl.public import PrivateKey

from contract.sealing import KEY_BYTES, KeyPair
from svckit.env import ConfigError

KEY_FILE_MODE = 0o600
KEY_DIR_MODE = 0o700


def default_key_file(env: Mapping[str, str]) -> Path:
    """Where the key lives when no path is configured (see the module docstring)."""
    config_home = env.get("XDG_CONFIG_HOME", "").strip()
    if config_home:
        return Path(config_home) / "hedgerow" / "provider.key"
    home = env.get("HOME", "").strip()
    if not home:
        try:
            home = str(Path.home())
        except RuntimeError:  # no home at all: next to where the agent runs
            return Path(".hedgerow") / "provider.key"
    return Path(home) / ".config" / "hedgerow" / "provider.key"


def load_or_create_key(path: Path) -> tuple[KeyPair, bool]:
    """The key in `path`, created if there is none; and whether it was just created.
    Raises `ConfigError` for a file others may access, or one that holds no key."""
    try:
        return _load(path), False
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(mode=KEY_DIR_MODE, parents=True, exist_ok=True)
        created = _create(path)
    except OSError as exc:
        raise ConfigError(f"cannot create the provider key file {path}: {exc}") from exc
    # Another agent may have created it first: the file in place is the key.
    return _load(path), created


def _load(path: Path) -> KeyPair:
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"provider key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"provider key file {path} is accessible by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}"
            )
        text = os.read(fd, 4 * KEY_BYTES).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != KEY_BYTES:
        raise ConfigError(f"provider key file {path} does not hold a {KEY_BYTES}-byte hex key")
    return KeyPair(PrivateKey(secret))


def _create(path: Path) -> bool:
    """Write a new key to `path` unless one appears there first; True if ours won."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        os.fchmod(fd, KEY_FILE_MODE)  # whatever the umask
        os.write(fd, (bytes(PrivateKey.generate()).hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(aside, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)
    return True
