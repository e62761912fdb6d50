"""Issue 3 / A4, D1-D2: tool schemas reach the provider repaired, through every dialect.

The provider here is a scripted link client with no repair of its own, so what it records
is exactly what the gateway and normalizer sent."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from stack.launcher import API_KEY, ENROLLMENT_TOKEN, Stack
from tests.e2e.conftest import FAST_ENV
from tests.fakes.link_provider import RecordingProvider, recording_provider

pytestmark = pytest.mark.e2e
MODEL = "hedgerow-sim-1"
NULLABLE = {
    "type": "object",
    "properties": {"city": {"type": ["string", "null"]}, "unit": {"enum": ["c", "f"]}},
}
REPAIRED = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "nullable": True},
        "unit": {"enum": ["c", "f"], "type": "string"},
    },
}


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[Stack, RecordingProvider]]:
    with Stack([], env=FAST_ENV) as s, recording_provider(s.link_url, ENROLLMENT_TOKEN) as rec:
        s.wait_providers(["recorder"])
        yield s, rec


def _post(stack: Stack, path: str, body: dict[str, object]) -> None:
    r = httpx.post(
        f"{stack.base_url}{path}",
        json=body,
        timeout=20,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert r.status_code == 200, r.text


def test_a4_chat_tools_arrive_repaired(recorder: tuple[Stack, RecordingProvider]) -> None:
    stack, rec = recorder
    _post(
        stack,
        "/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": NULLABLE}}],
        },
    )
    assert rec.bodies[-1]["tools"][0]["function"]["parameters"] == REPAIRED  # type: ignore[index]


def test_a4_responses_flat_tools_arrive_repaired(recorder: tuple[Stack, RecordingProvider]) -> None:
    stack, rec = recorder
    _post(
        stack,
        "/responses",
        {
            "model": MODEL,
            "input": "x",
            "tools": [{"type": "function", "name": "f", "parameters": NULLABLE}],
        },
    )
    assert rec.bodies[-1]["tools"][0]["function"]["parameters"] == REPAIRED  # type: ignore[index]


def test_a4_anthropic_input_schema_arrives_repaired(
    recorder: tuple[Stack, RecordingProvider],
) -> None:
    stack, rec = recorder
    _post(
        stack,
        "/messages",
        {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": NULLABLE}],
        },
    )
    assert rec.bodies[-1]["tools"][0]["function"]["parameters"] == REPAIRED  # type: ignore[index]


def test_a4_body_without_tools_is_forwarded_byte_identical(
    recorder: tuple[Stack, RecordingProvider],
) -> None:
    stack, rec = recorder
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "big 9007199254740993 0.30000000000000004"}],
    }
    _post(stack, "/chat/completions", body)
    assert rec.bodies[-1] == body
