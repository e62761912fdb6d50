"""Who may use a provider id, and how much one enrollment token may hold (rules F5, F6).

Pure: no I/O; the clock is an argument.

**F5, identity bound to key.** A provider id belongs to the X25519 key that first
registered it (and proved possession of its secret). The binding lives in the dispatcher's
memory while the provider is connected and for `id_binding_ttl_s` after it was last seen;
meanwhile a registration of that id with any other key is refused, never a takeover. The
same key registering again is the same provider reconnecting: it replaces its own session.
Memory is bounded per token: a token holding more than `max_ids_per_token` bindings loses
its own least recently seen offline ones, so churning ids under one token never evicts
another token's bindings. (A dispatcher restart forgets every binding: the first key to
register an id afterwards holds it.)

**F6, per-token caps.** One enrollment token may hold at most `max_links_per_token` live
sessions and advertise at most `max_models_per_token` models across them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class _Binding:
    key: bytes
    token: str
    last_seen: float
    live: bool


class IdentityBook:
    """provider id -> the key (and token) that holds it."""

    def __init__(self, ttl_s: float, max_ids_per_token: int) -> None:
        self._ttl_s = ttl_s
        self._max_per_token = max_ids_per_token
        self._bindings: dict[str, _Binding] = {}
        self._by_token: dict[str, set[str]] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._bindings)

    def key_of(self, provider_id: str, now: float) -> bytes | None:
        """The key `provider_id` is bound to now, or None if it is free."""
        binding = self._bindings.get(provider_id)
        if binding is None or self._expired(binding, now):
            return None
        return binding.key

    def bound_elsewhere(self, provider_id: str, key: bytes, now: float) -> bool:
        """True when `provider_id` is held by a key other than `key` (refuse, F5)."""
        held = self.key_of(provider_id, now)
        return held is not None and held != key

    def bind(self, provider_id: str, key: bytes, token: str, now: float) -> None:
        """`key` (proven, via `token`) now holds `provider_id` and is live. The caller has
        checked `bound_elsewhere` with no await in between."""
        assert not self.bound_elsewhere(provider_id, key, now), provider_id
        self._sweep(now)
        previous = self._bindings.get(provider_id)
        if previous is not None:
            self._by_token[previous.token].discard(provider_id)
            if not self._by_token[previous.token]:
                del self._by_token[previous.token]
        self._bindings[provider_id] = _Binding(key, token, now, live=True)
        ids = self._by_token.setdefault(token, set())
        ids.add(provider_id)
        self._evict(token)

    def release(self, provider_id: str, now: float) -> None:
        """The live session of `provider_id` ended: its binding lasts `ttl_s` from now."""
        binding = self._bindings.get(provider_id)
        if binding is not None:
            binding.live = False
            binding.last_seen = now

    def _expired(self, binding: _Binding, now: float) -> bool:
        return not binding.live and now - binding.last_seen > self._ttl_s

    def _forget(self, provider_id: str) -> None:
        binding = self._bindings.pop(provider_id)
        ids = self._by_token[binding.token]
        ids.discard(provider_id)
        if not ids:
            del self._by_token[binding.token]

    def _evict(self, token: str) -> None:
        ids = self._by_token.get(token, set())
        while len(ids) > self._max_per_token:
            offline = [i for i in ids if not self._bindings[i].live]
            if not offline:
                return  # every one is live: the link cap (F6) bounds these
            self._forget(min(offline, key=lambda i: self._bindings[i].last_seen))

    def _sweep(self, now: float) -> None:
        # Expired bindings are already ignored by `key_of`; sweeping only returns their
        # memory, so it runs at most a few times per ttl, not on every registration.
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._ttl_s / 16
        for provider_id in [i for i, b in self._bindings.items() if self._expired(b, now)]:
            self._forget(provider_id)


@dataclass(frozen=True)
class LiveLink:
    """One live session as the token caps see it."""

    token: str
    provider_id: str
    models: int


def token_refusal(
    live: Iterable[LiveLink],
    *,
    token: str,
    provider_id: str,
    models: int,
    max_links: int,
    max_models: int,
) -> str | None:
    """Why `provider_id` may not hold a session of `models` models under `token` (F6), or
    None. The live session of `provider_id` itself is left out: it is the one this
    registration replaces (a reconnect) or this update changes."""
    links, advertised = 1, models
    for link in live:
        if link.token == token and link.provider_id != provider_id:
            links += 1
            advertised += link.models
    if links > max_links:
        return f"enrollment token is at its cap of {max_links} links"
    if advertised > max_models:
        return f"enrollment token is over its cap of {max_models} models"
    return None
