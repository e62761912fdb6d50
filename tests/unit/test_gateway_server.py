"""How the gateway runs: the access log without query strings (A15), a file limit that
fits the connection limit (A12), the model list's cap (A17)."""

from __future__ import annotations

import logging
import resource

import pytest

from contract.link import MAX_MODEL_ID_CHARS
from gateway.catalog import listed_models
from gateway.server import FD_HEADROOM, PathOnlyAccessLog, fit_file_limit


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's httptools protocol logs each answer."""
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", path, "1.1", 200),
        None,
    )


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v1/chat/completions?api_key=sk-secret", "/v1/chat/completions"),
        ("/v1/models?a=1?b=2", "/v1/models"),
        ("/healthz", "/healthz"),
        ("/?", "/"),
    ],
)
def test_a15_access_lines_keep_the_path_and_drop_the_query(path: str, logged: str) -> None:
    record = access_record(path)
    assert PathOnlyAccessLog().filter(record)
    assert record.getMessage() == f'127.0.0.1:5000 - "POST {logged} HTTP/1.1" 200'


def test_a15_other_records_pass_untouched() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "no args", None, None)
    assert PathOnlyAccessLog().filter(record)
    assert record.getMessage() == "no args"


class Limits:
    def __init__(self, soft: int, hard: int, settable: bool = True) -> None:
        self.soft, self.hard, self.settable = soft, hard, settable

    def get(self, _which: int) -> tuple[int, int]:
        return self.soft, self.hard

    def set(self, _which: int, limits: tuple[int, int]) -> None:
        if not self.settable:
            raise ValueError("not permitted")
        self.soft, self.hard = limits


def test_a12_the_soft_file_limit_is_raised_to_fit_the_connections() -> None:
    limits = Limits(1024, 65536)
    assert fit_file_limit(1000, limits.get, limits.set) == 1000
    assert limits.soft == 1000 + FD_HEADROOM


def test_a12_the_connection_limit_shrinks_when_the_file_limit_cannot_grow() -> None:
    # 1,100 stalled connections once took every descriptor and every real request failed:
    # the edge must refuse connections itself before accept() does it for everyone.
    capped = Limits(1024, 1024)
    assert fit_file_limit(5000, capped.get, capped.set) == 1024 - FD_HEADROOM
    stuck = Limits(512, 65536, settable=False)
    assert fit_file_limit(1000, stuck.get, stuck.set) == 512 - FD_HEADROOM
    roomy = Limits(resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    assert fit_file_limit(1000, roomy.get, roomy.set) == 1000


def test_a17_listed_models_are_plausible_unique_and_capped() -> None:
    ids = ["a", "a", "b c", "", "x" * (MAX_MODEL_ID_CHARS + 1), "ok/m:7b@1", "z\r\n", "ü"]
    assert listed_models(ids, 10) == ["a", "ok/m:7b@1"]
    assert listed_models((f"m{i}" for i in range(10**6)), 3) == ["m0", "m1", "m2"]
