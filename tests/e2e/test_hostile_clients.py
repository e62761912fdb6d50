"""Issue 19, hostile clients: each attack tried against the whole stack (real processes, raw
sockets where a real client would not go), while honest requests keep being served.

- A12: a few hundred connections that send half their headers and stall (the attack once
  exhausted the gateway's file limit and every real request failed): real requests keep
  succeeding, the gateway holds no more than its connection limit, every stalled one is
  closed at the header deadline.
- A14: one key holding all its places in flight does not starve another key, and a place
  comes back the moment its client leaves.
- A16: `max_tokens` of 2^63 and beyond is a 400 naming the field in every dialect.
- A13: an X-Request-Id that is not a short plain id is replaced, never echoed or logged.
- A15: a client that leaves is one info line, never a traceback; no query string is logged.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack.launcher import API_KEY, Stack
from tests.e2e.conftest import FAST_ENV

pytestmark = pytest.mark.e2e
MODEL = "hedgerow-sim-1"
GREEDY_KEY = "greedy-key-0123456789"
MAX_CONNECTIONS = 40
HEADER_TIMEOUT_S = 2.0
STALLED = 200
HALF_HEADERS = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bea"


@pytest.fixture(scope="module")
def hostile_stack() -> Iterator[Stack]:
    env = {
        **FAST_ENV,
        "HEDGEROW_API_KEYS": f"{API_KEY},{GREEDY_KEY}",
        "HEDGEROW_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "HEDGEROW_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "HEDGEROW_KEY_CONCURRENCY_LIMITS": f"{GREEDY_KEY}=2",
        "HEDGEROW_SIM_TOKENS_PER_S": "200",
    }
    with Stack(env=env) as s:
        yield s


def chat(max_tokens: int = 3, **extra: object) -> dict[str, object]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello"}],
        **extra,
    }


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def gateway_log(stack: Stack) -> list[dict[str, object]]:
    lines = Path(stack.processes["gateway"].log_path).read_text(errors="replace").splitlines()
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"level": "raw", "msg": line})
    return out


def open_fds(stack: Stack) -> int:
    return len(os.listdir(f"/proc/{stack.processes['gateway'].popen.pid}/fd"))


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed `sock` (EOF, a final answer then EOF, or a reset)."""
    sock.setblocking(False)
    try:
        while sock.recv(4096):
            pass
        return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_a12_stalled_half_sent_headers_do_not_starve_real_requests(hostile_stack: Stack) -> None:
    port = hostile_stack.ports.gateway
    fds_before = open_fds(hostile_stack)
    stalled: list[socket.socket] = []
    statuses: list[int] = []
    stop = threading.Event()

    def honest_client() -> None:
        with httpx.Client(base_url=hostile_stack.base_url, headers=auth(), timeout=10) as c:
            while not stop.is_set():
                statuses.append(c.post("/chat/completions", json=chat()).status_code)

    client = threading.Thread(target=honest_client)
    client.start()
    try:
        for _ in range(STALLED):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(HALF_HEADERS)
            stalled.append(sock)
            time.sleep(0.005)
        most_fds = open_fds(hostile_stack)
        time.sleep(0.5)  # honest traffic alongside the stalled ones
    finally:
        stop.set()
        client.join(30)
    assert statuses and set(statuses) == {200}, statuses
    assert len(statuses) >= 10
    # The stalled connections never held more than the connection limit's worth of files.
    assert most_fds <= fds_before + MAX_CONNECTIONS + 5
    deadline = time.monotonic() + HEADER_TIMEOUT_S + 2
    while time.monotonic() < deadline and not all(closed_by_server(s) for s in stalled):
        time.sleep(0.1)
    assert all(closed_by_server(s) for s in stalled), "a stalled connection outlived its deadline"
    for sock in stalled:
        sock.close()
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'gateway_connections_closed_total{reason="evicted"}' in metrics
    assert 'gateway_connections_closed_total{reason="header_timeout"}' in metrics
    assert httpx.post(
        f"{hostile_stack.base_url}/chat/completions", json=chat(), headers=auth(), timeout=10
    ).is_success


def test_a14_one_key_holding_its_places_does_not_starve_another(hostile_stack: Stack) -> None:
    url = f"{hostile_stack.base_url}/chat/completions"
    long_stream = chat(max_tokens=4000, stream=True)  # 20 s at the sim's 200 tokens/s
    with httpx.Client(timeout=20) as greedy, httpx.Client(timeout=20) as honest:
        first = greedy.send(
            greedy.build_request("POST", url, json=long_stream, headers=auth(GREEDY_KEY)),
            stream=True,
        )
        second = greedy.send(
            greedy.build_request("POST", url, json=long_stream, headers=auth(GREEDY_KEY)),
            stream=True,
        )
        try:
            assert first.status_code == second.status_code == 200
            started = time.monotonic()
            third = greedy.post(url, json=chat(), headers=auth(GREEDY_KEY))
            assert third.status_code == 429
            assert time.monotonic() - started < 1, "refused at once, not queued"
            assert third.json()["error"]["code"] == "rate_limit_exceeded"
            assert third.headers["retry-after"] == "1"
            other = honest.post(url, json=chat(), headers=auth())
            assert other.status_code == 200, other.text
        finally:
            first.close()  # the client leaves mid-stream: its place comes back
        deadline = time.monotonic() + 5
        while True:
            again = greedy.post(url, json=chat(), headers=auth(GREEDY_KEY))
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert again.status_code == 200, again.text
        second.close()


HUGE_TOKENS = {
    "/chat/completions": ("max_tokens", {"messages": [{"role": "user", "content": "x"}]}),
    "/completions": ("max_tokens", {"prompt": "x"}),
    "/responses": ("max_output_tokens", {"input": "x"}),
    "/messages": ("max_tokens", {"messages": [{"role": "user", "content": "x"}]}),
}


@pytest.mark.parametrize("path", list(HUGE_TOKENS))
@pytest.mark.parametrize("value", [2**63, 2**64, 10**30, -(2**63)])
def test_a16_huge_max_tokens_is_a_400_naming_the_field(
    hostile_stack: Stack, path: str, value: int
) -> None:
    field, rest = HUGE_TOKENS[path]
    body = json.dumps({"model": MODEL, field: value, **rest})
    r = httpx.post(
        f"{hostile_stack.base_url}{path}",
        content=body,
        headers={**auth(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400, r.text
    if path == "/messages":
        assert field in r.json()["error"]["message"]
    else:
        assert r.json()["error"]["param"] == field


@pytest.mark.parametrize("bad", ["x" * 300, "two words", "semi;colon", "evil\tid"])
def test_a13_a_bad_request_id_is_replaced_and_never_logged(hostile_stack: Stack, bad: str) -> None:
    r = httpx.post(
        f"{hostile_stack.base_url}/chat/completions",
        json=chat(),
        headers={**auth(), "X-Request-Id": bad},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"].startswith("req_") and r.headers["x-request-id"] != bad
    for name in ("gateway", "dispatcher"):
        assert bad not in Path(hostile_stack.processes[name].log_path).read_text()
    good = httpx.post(
        f"{hostile_stack.base_url}/chat/completions",
        json=chat(),
        headers={**auth(), "X-Request-Id": "run-19.step:3"},
        timeout=10,
    )
    assert good.headers["x-request-id"] == "run-19.step:3"


def test_a15_a_client_leaving_is_one_info_line_and_no_query_is_logged(
    hostile_stack: Stack,
) -> None:
    port = hostile_stack.ports.gateway
    before = len(gateway_log(hostile_stack))
    body = json.dumps(chat(max_tokens=2000, stream=True)).encode()
    head = (
        f"POST /v1/chat/completions?api_key=sk-leaked-in-query HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    # Mid-stream: read the answer's head, then hang up.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        assert sock.recv(12) == b"HTTP/1.1 200"
    # Mid-body: half the body, then hang up.
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)
    time.sleep(1.0)
    lines = gateway_log(hostile_stack)[before:]
    gone = [line for line in lines if line.get("msg") == "client disconnected"]
    assert len(gone) == 2, lines
    assert all(line["level"] == "info" for line in gone)
    assert not [line for line in lines if line.get("level") in ("error", "critical", "raw")]
    assert not any("exc" in line or "Traceback" in str(line) for line in lines)
    assert "sk-leaked-in-query" not in Path(hostile_stack.processes["gateway"].log_path).read_text()
