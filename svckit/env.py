"""Typed readers for `HEDGEROW_*` environment settings.

Each service's `config.py` builds one frozen dataclass from these at start; a bad value
fails the start with a message naming the variable (never a silent default).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is present but invalid."""


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = _raw(env, name)
    return default if value is None else value


def env_int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        parsed = int(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not an integer") from exc
    if parsed < minimum:
        raise ConfigError(f"{name}={parsed} must be >= {minimum}")
    return parsed


def env_float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        parsed = float(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not a number") from exc
    if not parsed >= minimum:
        raise ConfigError(f"{name}={parsed} must be >= {minimum}")
    return parsed


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _raw(env, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean")


def env_list(env: Mapping[str, str], name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    value = _raw(env, name)
    if value is None:
        return default
    return tuple(item.strip() for item in value.split(",") if item.strip())


def load_or_exit(load: Callable[[], T], service: str) -> T:
    """`load()` a service's config; a bad or missing setting ends the process with one clear
    line on stderr and exit status 2, not a traceback."""
    try:
        return load()
    except ConfigError as exc:
        print(f"{service}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
