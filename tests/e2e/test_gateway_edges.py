"""Issue 8 edges: vision detection and fail-fast in every dialect (A5, A6), per-key rate
limits (429 + Retry-After), A8 headers on every endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from stack.launcher import API_KEY, Stack
from tests.e2e.conftest import FAST_ENV

pytestmark = pytest.mark.e2e
TEXT_MODEL, VISION_MODEL = "hedgerow-sim-1", "hedgerow-sim-vision-1"
PNG = "data:image/png;base64,iVBORw0KGgo="
LIMITED_KEY = "limited-key"


@pytest.fixture(scope="module")
def edge_stack() -> Iterator[Stack]:
    env = {
        **FAST_ENV,
        "HEDGEROW_API_KEYS": f"{API_KEY},{LIMITED_KEY}",
        "HEDGEROW_KEY_RATE_LIMITS": f"{LIMITED_KEY}=0.5/2",
    }
    with Stack(env=env) as s:
        yield s


def vision_bodies(model: str) -> dict[str, dict[str, object]]:
    return {
        "/chat/completions": {
            "model": model,
            "max_tokens": 3,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "image_url": {"url": PNG}},
                    ],
                }
            ],
        },
        "/responses": {
            "model": model,
            "max_output_tokens": 3,
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "what is this"},
                        {"type": "input_image", "image_url": PNG},
                    ],
                }
            ],
        },
        "/messages": {
            "model": model,
            "max_tokens": 3,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": "iVBORw0KGgo=",
                            },
                        },
                    ],
                }
            ],
        },
    }


def post(stack: Stack, path: str, body: dict[str, object], key: str = API_KEY) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}{path}", json=body, timeout=20, headers={"Authorization": f"Bearer {key}"}
    )


@pytest.mark.parametrize("path", ["/chat/completions", "/responses", "/messages"])
def test_a6_vision_request_without_a_vision_provider_is_503_at_once(
    edge_stack: Stack, path: str
) -> None:
    started = time.monotonic()
    r = post(edge_stack, path, vision_bodies(TEXT_MODEL)[path])
    assert r.status_code == 503
    assert time.monotonic() - started < 5, "fail fast, never a queue wait"
    assert r.headers.get("retry-after")
    text = json.dumps(r.json())
    assert "vision" in text.lower()


@pytest.mark.parametrize("path", ["/chat/completions", "/responses", "/messages"])
def test_a5_vision_request_routes_to_a_vision_model(edge_stack: Stack, path: str) -> None:
    r = post(edge_stack, path, vision_bodies(VISION_MODEL)[path])
    assert r.status_code == 200, r.text
    for header in ("x-request-id", "x-provider-id", "x-provider-version", "x-attempts", "x-timing"):
        assert r.headers[header], header


def test_a11_per_key_rate_limit_is_429_with_retry_after(edge_stack: Stack) -> None:
    body = {"model": TEXT_MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    statuses = [post(edge_stack, "/chat/completions", body, LIMITED_KEY) for _ in range(4)]
    assert [r.status_code for r in statuses[:2]] == [200, 200]
    limited = statuses[2]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["retry-after"]) <= 2
    # Other keys have their own bucket.
    assert post(edge_stack, "/chat/completions", body).status_code == 200


A8_BODIES = {
    "/chat/completions": {
        "model": TEXT_MODEL,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "x"}],
    },
    "/completions": {"model": TEXT_MODEL, "max_tokens": 2, "prompt": "x"},
    "/responses": {"model": TEXT_MODEL, "max_output_tokens": 2, "input": "x"},
    "/messages": {
        "model": TEXT_MODEL,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": "x"}],
    },
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", list(A8_BODIES))
def test_a8_committed_responses_carry_routing_headers(
    edge_stack: Stack, path: str, stream: bool
) -> None:
    body = {**A8_BODIES[path], "stream": stream}
    with httpx.stream(
        "POST",
        f"{edge_stack.base_url}{path}",
        json=body,
        timeout=20,
        headers={"Authorization": f"Bearer {API_KEY}", "X-Request-Id": "client-chosen-id"},
    ) as r:
        r.read()
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "client-chosen-id"
    assert r.headers["x-provider-id"] in {"sim-a", "sim-b"}
    assert r.headers["x-provider-version"] and int(r.headers["x-attempts"]) >= 1
    timing = json.loads(r.headers["x-timing"])
    assert set(timing) == {
        "parse_us",
        "normalize_us",
        "admit_us",
        "queue_us",
        "dispatch_us",
        "provider_us",
    }
    assert all(isinstance(v, int) and v >= 0 for v in timing.values())
