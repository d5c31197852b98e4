"""Kibana Dev Tools text: parseable, exact bodies, float32-exact vectors, the formula stated."""

from __future__ import annotations

import json

import numpy as np

from es_embed.config import IndexSettings
from es_embed.search.builders import plan
from es_embed.search.devconsole import body_text, render
from es_embed.search.spec import SearchSpec
from tests.search_helpers import parse_dev_console

CONF = IndexSettings(name="docs", text_fields=("title", "text"), vector_field="vec", dims=32)


def vector(seed: int = 0) -> list[float]:
    v = np.random.default_rng(seed).standard_normal(32).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def test_body_text_puts_the_vector_on_one_line_and_round_trips_float32() -> None:
    vec = vector()
    body = plan(SearchSpec(index="docs", query="q", mode="knn"), CONF, vec).requests[0].body
    text = body_text(body)
    (line,) = [ln for ln in text.splitlines() if "query_vector" in ln]
    assert line.strip().startswith('"query_vector": [') and line.rstrip().endswith("],")
    parsed = json.loads(text)
    assert np.array_equal(
        np.asarray(parsed["knn"]["query_vector"], dtype=np.float32), np.asarray(vec, np.float32)
    )
    parsed["knn"]["query_vector"] = body["knn"]["query_vector"]
    assert parsed == body


def test_render_hybrid_prints_both_legs_and_the_formula() -> None:
    spec = SearchSpec(
        index="docs", query='say "hi"', fusion="rrf", k=5, from_=5, filter=({"term": {"a": 1}},)
    )
    p = plan(spec, CONF, vector())
    text = render(p, spec)
    requests = parse_dev_console(text)
    assert [(m, path) for m, path, _ in requests] == [
        ("GET", "docs/_search"),
        ("GET", "docs/_search"),
    ]
    for (_, _, body), leg in zip(requests, p.requests, strict=True):
        assert json.loads(json.dumps(leg.body)).keys() == body.keys()
        assert body["size"] == 100 and body["from"] == 0
    assert "1 / (60 + r)" in text
    assert "hits [5, 10)" in text
    assert '"say \\"hi\\""' in text.splitlines()[0]


def test_render_linear_and_sum_state_their_weights() -> None:
    weights = {"bm25": 0.25, "knn": 4.0}
    lin = SearchSpec(index="docs", query="q", fusion="linear", weights=weights)
    assert "0.25 * mm_bm25 + 4 * mm_knn" in render(plan(lin, CONF, vector()), lin)
    sm = SearchSpec(index="docs", query="q", fusion="sum", weights=weights)
    text = render(plan(sm, CONF, vector()), sm)
    assert "boost 0.25" in text and "boost 4" in text
    ((method, path, body),) = parse_dev_console(text)
    assert (method, path) == ("GET", "docs/_search?include_named_queries_score=true")
    assert body["knn"]["boost"] == 4.0


def test_render_bm25_has_no_vector() -> None:
    spec = SearchSpec(index="docs", query="q", mode="bm25")
    text = render(plan(spec, CONF, None), spec)
    assert "query_vector" not in text
    ((_, _, body),) = parse_dev_console(text)
    assert body["query"]["multi_match"]["query"] == "q"


def test_render_auto_the_default_states_its_formula_with_the_weights() -> None:
    spec = SearchSpec(index="docs", query="q", window=40, weights={"bm25": 2.0, "knn": 3.0})
    assert spec.fusion == "auto"
    text = render(plan(spec, CONF, vector()), spec)
    assert "fusion auto (client-side)" in text
    # knn's weight is the request's times the fitted knn_weight (0.5): 3 * 0.5
    assert "score = 2 * (e_bm25 - f_bm25) + 1.5 * (e_knn - f_knn)" in text
    assert "e = max(0, (s - z) / (max - z))" in text
    assert "knn 0.5 for cosine and dot_product, 1 for max_inner_product" in text
    assert "when the leg returned 40 hits, else 0" in text
