"""Fuzz ``POST /v1/search`` against a real node (Hypothesis, the ``ci`` profile of
tests/fuzz_support.py): arbitrary bodies, valid bodies with one field mutated, and query-DSL
shaped filters (lookups, scripts, nesting) that Elasticsearch itself gets to parse. The
answer is 2xx or a 4xx in the OpenAI envelope: never a 5xx, never a logged traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from hypothesis import given
from hypothesis import strategies as st

from tests.api_support import make_settings
from tests.es.search_support import text_and_vector
from tests.fakes import FakeEncoder
from tests.fuzz_support import AppRunner, bodies, check_answer, json_scalars, raw_values

pytestmark = pytest.mark.es

DIMS = 64
SEARCH_FIELDS = (
    "index", "query", "mode", "fusion", "k", "from", "filter", "weights", "source", "window",
    "rank_constant", "num_candidates",
)  # fmt: skip
QUERY_WORDS = (
    "bool", "must", "should", "filter", "must_not", "term", "terms", "range", "match",
    "match_all", "nested", "path", "query", "exists", "field", "geo_shape", "indexed_shape",
    "index", "id", "script", "source", "script_score", "function_score", "functions",
    "more_like_this", "like", "_index", "_id", "percolate", "wrapper", "knn", "title", "tags",
    "gte", "lt", "boost", "ids", "values", "inner_hits", "has_child", "constant_score",
)  # fmt: skip
dsl = st.recursive(
    json_scalars | st.sampled_from(QUERY_WORDS),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(QUERY_WORDS), children, min_size=1, max_size=3)
    ),
    max_leaves=12,
)


@pytest.fixture
def index(es: Elasticsearch, index_name: str) -> Iterator[str]:
    es.indices.create(index=index_name, mappings=text_and_vector(DIMS, tags="keyword", n="integer"))
    encoder = FakeEncoder(hidden_size=DIMS)
    titles = ["red fox", "lazy dog", "quick brown fox", "sleeping cat", "fox and hound"]
    vectors = encoder.forward(encoder.tokenize(titles))
    ops: list[dict[str, Any]] = []
    for i, (title, vec) in enumerate(zip(titles, vectors, strict=True)):
        ops.append({"index": {"_index": index_name, "_id": str(i)}})
        ops.append({"title": title, "tags": [f"t{i % 2}"], "n": i, "embedding": vec.tolist()})
    assert not es.bulk(operations=ops, refresh=True)["errors"]
    yield index_name


def valid_bodies(index: str) -> list[dict[str, Any]]:
    return [
        {"index": index, "query": "fox"},
        {"index": index, "query": "red fox", "mode": "bm25", "k": 2, "from": 1,
         "filter": {"term": {"tags": "t0"}}, "source": ["title"]},
        {"index": index, "query": "fox", "mode": "knn", "k": 3, "window": 10,
         "num_candidates": 20, "source": False},
        {"index": index, "query": "fox", "fusion": "linear", "weights": {"bm25": 0.5, "knn": 2},
         "window": 5, "k": 5, "filter": [{"range": {"n": {"gte": 1}}}]},
        {"index": index, "query": "fox", "fusion": "sum", "rank_constant": 10, "source": True},
    ]  # fmt: skip


@pytest.mark.timeout(900)
def test_search_never_answers_5xx(
    es_url: str, index: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(
        elasticsearch={"url": es_url}, indices=[{"name": index, "text_fields": ["title", "text"]}]
    )
    valid = valid_bodies(index)
    filters = st.builds(
        lambda base, f: json.dumps({**base, "filter": f}).encode(),
        st.sampled_from(valid),
        dsl | st.lists(dsl, max_size=3),
    )
    with AppRunner(settings, FakeEncoder(hidden_size=DIMS)) as app:

        @given(body=bodies(valid, SEARCH_FIELDS) | filters | _weights(valid))
        def check(body: bytes) -> None:
            check_answer(*app.post("/v1/search", body))

        check()
        for body in valid:  # the property is not met by refusing everything
            status, text = app.post("/v1/search", json.dumps(body).encode())
            assert status == 200 and json.loads(text)["hits"], text
    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info]
    assert tracebacks == []


def _weights(valid: list[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Linear and sum fusion with any weight, raw numbers included (1.7e308, 1e999, NaN)."""
    return st.builds(
        lambda base, fusion, w1, w2: (
            json.dumps({**base, "fusion": fusion})[:-1]
            + f', "weights": {{"bm25": {w1}, "knn": {w2}}}}}'
        ).encode(),
        st.sampled_from([{k: v for k, v in b.items() if k != "weights"} for b in valid]),
        st.sampled_from(["linear", "sum", "rrf"]),
        raw_values,
        raw_values,
    )
