"""Fuzz ``POST /v1/embeddings`` and ``POST /v1/rerank`` (Hypothesis, the ``ci`` profile of
tests/fuzz_support.py): whatever the body, the answer is 2xx or a 4xx in the OpenAI
envelope, never a 5xx or a logged traceback. /v1/search is fuzzed against a real node in
tests/es/test_search_fuzz.py."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given

from tests.api_support import make_settings
from tests.fakes import FakeEncoder, FakeReranker
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


def never_5xx(
    app: AppRunner, route: str, valid: tuple[dict[str, object], ...], fields: tuple[str, ...]
) -> None:
    """Fuzzed bodies get 2xx or an enveloped 4xx; the valid ones really are valid (so the
    property is not met by refusing everything)."""

    @given(body=bodies(valid, fields))
    def check(body: bytes) -> None:
        check_answer(*app.post(route, body))

    check()
    for body in valid:
        status, text = app.post(route, json.dumps(body).encode())
        assert status == 200, text


@pytest.mark.timeout(600)
def test_embeddings_never_answer_5xx(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(server={"max_inputs": 16})
    with AppRunner(settings, FakeEncoder(hidden_size=64, max_length=16)) as app:
        never_5xx(app, "/v1/embeddings", VALID, EMBEDDING_FIELDS)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


RERANK_FIELDS = ("model", "query", "documents", "top_n", "return_documents", "instruction")
RERANK_VALID: tuple[dict[str, object], ...] = (
    {"query": "what is a lease", "documents": ["a shard lease", "a car lease"]},
    {"model": "fake-reranker", "query": "q", "documents": [{"text": "a"}, "b"], "top_n": 1,
     "return_documents": False},
)  # fmt: skip


@pytest.mark.timeout(600)
def test_rerank_never_answers_5xx(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(server={"max_inputs": 16})
    with AppRunner(settings, FakeEncoder(), FakeReranker()) as app:
        never_5xx(app, "/v1/rerank", RERANK_VALID, RERANK_FIELDS)
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
