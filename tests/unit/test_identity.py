"""F5-F7 pure parts: the identity book (id bound to key), the per-token caps and the
handshake gate with its address keys."""

from __future__ import annotations

import pytest

from dispatcher_svc.handshake import HandshakeGate, address_key
from dispatcher_svc.identity import IdentityBook, LiveLink, token_refusal

KEY_A = b"a" * 32
KEY_B = b"b" * 32
TTL = 100.0


def book(max_ids_per_token: int = 10) -> IdentityBook:
    return IdentityBook(TTL, max_ids_per_token)


# --- F5: identity bound to key ----------------------------------------------------------


def test_f5_an_unknown_id_is_free_for_any_key() -> None:
    ids = book()
    assert ids.key_of("p1", 0.0) is None
    assert not ids.bound_elsewhere("p1", KEY_A, 0.0)


def test_f5_a_live_id_is_refused_to_another_key_and_open_to_its_own() -> None:
    ids = book()
    ids.bind("p1", KEY_A, "#0", now=0.0)
    for now in (0.0, TTL * 10, TTL * 1000):  # live: never expires, however long
        assert ids.bound_elsewhere("p1", KEY_B, now)
        assert not ids.bound_elsewhere("p1", KEY_A, now)
    assert not ids.bound_elsewhere("p2", KEY_B, 0.0)


def test_f5_binding_lasts_the_ttl_after_the_provider_was_last_seen() -> None:
    ids = book()
    ids.bind("p1", KEY_A, "#0", now=0.0)
    ids.release("p1", now=50.0)
    assert ids.bound_elsewhere("p1", KEY_B, 50.0 + TTL)
    assert not ids.bound_elsewhere("p1", KEY_B, 50.0 + TTL + 0.001)
    assert ids.key_of("p1", 50.0 + TTL + 0.001) is None
    # Expired: the next key takes the id, and holds it from then on.
    ids.bind("p1", KEY_B, "#0", now=200.0)
    assert ids.bound_elsewhere("p1", KEY_A, 200.0)


def test_f5_same_key_reconnecting_refreshes_the_binding() -> None:
    ids = book()
    ids.bind("p1", KEY_A, "#0", now=0.0)
    ids.release("p1", now=10.0)
    ids.bind("p1", KEY_A, "#0", now=90.0)  # reconnect
    ids.release("p1", now=95.0)
    assert ids.bound_elsewhere("p1", KEY_B, 95.0 + TTL)


def test_f5_binding_another_key_over_a_live_binding_is_a_bug() -> None:
    ids = book()
    ids.bind("p1", KEY_A, "#0", now=0.0)
    with pytest.raises(AssertionError):
        ids.bind("p1", KEY_B, "#0", now=1.0)


def test_f5_a_token_churning_ids_evicts_only_its_own_oldest_offline_bindings() -> None:
    ids = book(max_ids_per_token=3)
    ids.bind("victim", KEY_A, "#0", now=0.0)
    ids.release("victim", now=1.0)
    ids.bind("live", KEY_A, "#1", now=0.0)  # never released
    for n in range(50):
        ids.bind(f"churn-{n}", KEY_B, "#1", now=10.0 + n)
        ids.release(f"churn-{n}", now=10.5 + n)
    assert ids.bound_elsewhere("victim", KEY_B, 100.0), "another token's binding survives"
    assert ids.bound_elsewhere("live", KEY_B, 100.0), "a live binding is never evicted"
    assert ids.key_of("churn-0", 100.0) is None, "the oldest offline one went first"
    assert ids.key_of("churn-49", 100.0) == KEY_B
    assert len(ids) == 1 + 3  # victim + the churning token's cap


def test_f5_expired_bindings_are_swept_so_memory_returns() -> None:
    ids = book(max_ids_per_token=10_000)
    for n in range(1000):
        ids.bind(f"p{n}", KEY_A, "#0", now=float(n) / 100)
        ids.release(f"p{n}", now=float(n) / 100)
    assert len(ids) == 1000
    ids.bind("late", KEY_A, "#0", now=TTL * 3)
    assert len(ids) == 1


def test_f5_moving_an_id_to_another_token_moves_its_accounting() -> None:
    ids = book(max_ids_per_token=1)
    ids.bind("p1", KEY_A, "#0", now=0.0)
    ids.release("p1", now=0.0)
    ids.bind("p1", KEY_A, "#1", now=1.0)  # same key, now enrolled under another token
    ids.release("p1", now=1.0)
    ids.bind("p2", KEY_A, "#0", now=2.0)  # #0 holds only p2: nothing of #0 to evict
    assert ids.key_of("p1", 2.0) == KEY_A


# --- F6: per-token caps -----------------------------------------------------------------


def links(token: str, count: int, models: int = 1) -> list[LiveLink]:
    return [LiveLink(token, f"{token}-p{n}", models) for n in range(count)]


def test_f6_a_token_at_its_link_cap_is_refused_another_link() -> None:
    live = links("#0", 3) + links("#1", 10)
    ok = token_refusal(live, token="#0", provider_id="new", models=1, max_links=4, max_models=100)
    assert ok is None
    live.append(LiveLink("#0", "fourth", 1))
    reason = token_refusal(
        live, token="#0", provider_id="new", models=1, max_links=4, max_models=100
    )
    assert reason is not None and "4 links" in reason


def test_f6_a_reconnect_does_not_count_its_own_old_session() -> None:
    live = links("#0", 4)
    assert (
        token_refusal(live, token="#0", provider_id="#0-p2", models=1, max_links=4, max_models=99)
        is None
    )


def test_f6_models_are_capped_across_the_tokens_links() -> None:
    live = links("#0", 3, models=30) + links("#1", 3, models=100)
    assert (
        token_refusal(live, token="#0", provider_id="n", models=10, max_links=9, max_models=100)
        is None
    )
    reason = token_refusal(
        live, token="#0", provider_id="n", models=11, max_links=9, max_models=100
    )
    assert reason is not None and "100 models" in reason
    # An update of one session replaces its own count.
    assert (
        token_refusal(live, token="#0", provider_id="#0-p0", models=40, max_links=9, max_models=100)
        is None
    )


# --- F7: the handshake gate -------------------------------------------------------------


def test_f7_gate_caps_handshakes_in_all_and_per_address() -> None:
    gate = HandshakeGate(max_total=3, max_per_addr=2)
    assert gate.enter("a") and gate.enter("a")
    assert not gate.enter("a"), "per address"
    assert gate.enter("b")
    assert not gate.enter("c"), "in all"
    assert gate.pending == 3
    gate.leave("a")
    assert gate.enter("c")
    gate.leave("a")
    gate.leave("b")
    gate.leave("c")
    assert gate.pending == 0
    assert gate.enter("a") and gate.enter("a")


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        (("127.0.0.1", 5000), "127.0.0.1"),
        (("::ffff:10.0.0.7", 1, 0, 0), "10.0.0.7"),
        (("2001:db8:1:2:3:4:5:6", 1, 0, 0), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::1", 9, 0, 0), "2001:db8:1:2::/64"),
        (("/tmp/sock",), "/tmp/sock"),
        (None, ""),
        ((), ""),
    ],
)
def test_f7_handshakes_count_per_ipv4_address_or_ipv6_64(remote: object, key: str) -> None:
    assert address_key(remote) == key
