"""The provider table: each provider's record through its lifecycle (register, heartbeat,
trust withdrawn, session ended, forgotten), and which providers are live.

Records are immutable; every change stores a new one. The table only keeps records: what a
change means for the slots and the queue (serve waiters, fail stranded ones) is the
caller's, told by what each method returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

from registry_svc.eligibility import is_live, seen_within
from registry_svc.model import ModelLoad, Provider, RegistrySettings
from registry_svc.store import ProviderStore


class ProviderTable:
    """Provider records in ``store``, stamped with the injected monotonic ``clock``.

    A provider silent for ``heartbeat_timeout_s`` is not live (gated as offline) until its
    next heartbeat; one silent for ``reconnect_grace_s`` is forgotten by ``sweep``.
    """

    def __init__(
        self, settings: RegistrySettings, *, clock: Callable[[], float], store: ProviderStore
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._store = store
        self._registrations = itertools.count(1)

    def upsert(
        self, provider: Provider, session: str = ""
    ) -> tuple[Provider, Provider | None, bool]:
        """Store ``provider`` stamped with ``last_seen`` now; return (the stored record, the
        record it replaced or None, whether this is a new registration).

        An upsert naming the (non-empty) ``session`` of the stored record is an update of
        that registration (the provider changed its models): it keeps its ``registration``
        (so its reservations still feed the breaker), its loads, and its trust (an update
        can withdraw trust, never grant it). Anything else is a new registration, stamped
        with a fresh ``registration``."""
        now = self._clock()
        previous = self._store.get(provider.id)
        if session and previous is not None and previous.session == session:
            record = replace(
                provider,
                session=session,
                last_seen=now,
                registration=previous.registration,
                trusted=previous.trusted and provider.trusted,
                loads=previous.loads,
            )
            renewed = False
        else:
            fresh = next(self._registrations)
            record = replace(provider, session=session, last_seen=now, registration=fresh)
            renewed = True
        self._store.put(record)
        return record, previous, renewed

    def go_offline(self, provider_id: str) -> Provider | None:
        """The provider's session ended: keep its record as offline (seen now), so requests
        may wait for it to reconnect (A7). Return the record before, or None if the
        provider is unknown or already offline."""
        previous = self._store.get(provider_id)
        if previous is None or not previous.online:
            return None
        self._store.put(replace(previous, online=False, last_seen=self._clock()))
        return previous

    def set_trusted(self, provider_id: str, trusted: bool) -> Provider | None:
        """Record a challenge verdict (F1). Return the record before (its ``trusted`` tells
        whether anything changed), or None if the provider is unknown."""
        previous = self._store.get(provider_id)
        if previous is not None and previous.trusted != trusted:
            self._store.put(replace(previous, trusted=trusted))
        return previous

    def heartbeat(
        self,
        provider_id: str,
        loads: Mapping[str, ModelLoad],
        limits: Mapping[str, int] | None = None,
    ) -> list[str] | None:
        """Replace the provider's per-model loads (models missing count as idle), apply
        changed per-model concurrency ``limits`` (values <= 0 and unknown models are
        ignored) and refresh ``last_seen``.

        Returns the models that may take more requests now (a raised limit, or every model
        of a provider back from silence; a model may be listed twice), or None if the
        provider is unknown. Does not bring an offline provider back (only ``upsert`` does).
        """
        previous = self._store.get(provider_id)
        if previous is None:
            return None
        now = self._clock()
        models = previous.models
        changed = {
            m: n
            for m, n in (limits or {}).items()
            if m in models and n > 0 and models[m].max_concurrency != n
        }
        if changed:
            models = {
                m: replace(info, max_concurrency=changed[m]) if m in changed else info
                for m, info in models.items()
            }
        self._store.put(replace(previous, models=models, loads=dict(loads), last_seen=now))
        more_room = list(changed)
        if previous.online and now - previous.last_seen > self._settings.heartbeat_timeout_s:
            # It was silent long enough to be gated as offline; it is routable again.
            more_room.extend(previous.models)
        return more_room

    def sweep(self, now: float, stranded: Callable[[Provider], None]) -> None:
        """Forget providers not seen for ``reconnect_grace_s``. Each forgotten provider, and
        each online one silent for ``heartbeat_timeout_s``, is handed to ``stranded`` in
        turn, right after it was forgotten (its waiters may have nobody left)."""
        for provider in list(self._store.providers()):
            silent_s = now - provider.last_seen
            gone = not seen_within(provider, now, self._settings.reconnect_grace_s)
            if gone:
                self._store.delete(provider.id)
            if gone or (provider.online and silent_s > self._settings.heartbeat_timeout_s):
                stranded(provider)

    def providers(self) -> Collection[Provider]:
        """Every record, in any state."""
        return self._store.providers()

    def live(self) -> list[Provider]:
        """The live providers (``eligibility.is_live``: online, trusted, not silent)."""
        now, stale_after_s = self._clock(), self._settings.heartbeat_timeout_s
        return [p for p in self._store.providers() if is_live(p, now, stale_after_s)]
