"""Fuzz ``POST /v1/embeddings`` (Hypothesis, the ``ci`` profile of tests/fuzz_support.py):
whatever the body, the answer is 2xx or a 4xx in the OpenAI envelope, never a 5xx or a
logged traceback. /v1/search is fuzzed against a real node in tests/es/test_search_fuzz.py."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given

from tests.api_support import make_settings
from tests.fakes import FakeEncoder
from tests.fuzz_support import AppRunner, bodies, check_answer

EMBEDDING_FIELDS = (
    "input", "model", "dimensions", "encoding_format", "user", "input_type", "instruction",
)  # fmt: skip
VALID = (
    {"input": "hello world"},
    {"input": ["a first text", "a second one"], "model": "fake-encoder", "dimensions": 32},
    {"input": ["q"], "input_type": "query", "instruction": "Find the answer",
     "encoding_format": "base64", "user": "u-1"},
)  # fmt: skip


@pytest.mark.timeout(600)
def test_embeddings_never_answer_5xx(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(server={"max_inputs": 16})
    with AppRunner(settings, FakeEncoder(hidden_size=64, max_length=16)) as app:

        @given(body=bodies(VALID, EMBEDDING_FIELDS))
        def check(body: bytes) -> None:
            check_answer(*app.post("/v1/embeddings", body))

        check()
        # The valid bodies really are valid: the property is not met by refusing everything.
        for valid in VALID:
            status, text = app.post("/v1/embeddings", _json(valid))
            assert status == 200, text
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert tracebacks == []


def _json(value: object) -> bytes:
    return json.dumps(value).encode()
