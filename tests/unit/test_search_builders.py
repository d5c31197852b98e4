"""Exact request bodies for every builder and every mode/fusion of ``plan``."""

from __future__ import annotations

import pytest

from es_embed.config import IndexSettings
from es_embed.search.builders import (
    bm25_body,
    knn_body,
    msearch_lines,
    native_body,
    num_candidates_for,
    plan,
    sum_body,
)
from es_embed.search.spec import SearchSpec

CONF = IndexSettings(name="docs", text_fields=("title", "body"), vector_field="vec", dims=64)
VEC = [0.5, -0.25, 0.125]
TERM = {"term": {"lang": "en"}}
SOURCE = {"excludes": ["vec", "_embed"]}  # the default: no vector, no _embed record
MM = {"multi_match": {"query": "red fox", "fields": ["title", "body"]}}
FILTERED_MM = {"bool": {"must": [MM], "filter": [TERM]}}


def knn_sec(k: int, nc: int, **extra: object) -> dict[str, object]:
    return {"field": "vec", "query_vector": VEC, "k": k, "num_candidates": nc, **extra}


@pytest.mark.parametrize(("k", "expected"), [(1, 100), (50, 100), (51, 102), (100, 200)])
def test_num_candidates_default_is_max_100_and_2k(k: int, expected: int) -> None:
    assert num_candidates_for(k) == expected


def test_num_candidates_is_capped_and_explicit_wins() -> None:
    assert num_candidates_for(9000) == 10_000
    assert num_candidates_for(10, 37) == 37


def test_bm25_body_without_filter() -> None:
    body = bm25_body("red fox", ["title", "body"], size=10, from_=20, source=True)
    assert body == {"query": MM, "size": 10, "from": 20, "_source": True}


def test_bm25_body_with_filter() -> None:
    body = bm25_body("red fox", ("title", "body"), size=5, filters=[TERM], source=False)
    assert body == {"query": FILTERED_MM, "size": 5, "from": 0, "_source": False}


def test_knn_body_with_filter_and_default_candidates() -> None:
    body = knn_body(VEC, "vec", k=60, size=10, from_=10, filters=[TERM], source=SOURCE)
    assert body == {
        "knn": knn_sec(60, 120, filter=[TERM]),
        "size": 10,
        "from": 10,
        "_source": SOURCE,
    }


def test_sum_body_names_and_boosts_both_parts() -> None:
    body = sum_body(
        "red fox", VEC, CONF, k=100, size=10, filters=[TERM],
        weights={"bm25": 0.3, "knn": 2.0}, source=SOURCE,
    )  # fmt: skip
    assert body == {
        "query": {"bool": {"must": [MM], "filter": [TERM], "boost": 0.3, "_name": "bm25"}},
        "knn": knn_sec(100, 200, filter=[TERM], boost=2.0, _name="knn"),
        "size": 10,
        "from": 0,
        "_source": SOURCE,
    }


def test_native_rrf_body() -> None:
    body = native_body(
        "rrf", "red fox", VEC, CONF, window=100, size=10, from_=10, filters=[TERM],
        weights={"bm25": 1.0, "knn": 1.0}, rank_constant=60, source=SOURCE,
    )  # fmt: skip
    assert body == {
        "retriever": {
            "rrf": {
                "retrievers": [
                    {"standard": {"query": FILTERED_MM}},
                    {"knn": knn_sec(100, 200, filter=[TERM])},
                ],
                "rank_constant": 60,
                "rank_window_size": 100,
            }
        },
        "size": 10,
        "from": 10,
        "_source": SOURCE,
    }


def test_native_linear_body() -> None:
    body = native_body(
        "linear", "red fox", VEC, CONF, window=50, size=10,
        weights={"bm25": 0.5, "knn": 2.0}, source=SOURCE,
    )  # fmt: skip
    assert body == {
        "retriever": {
            "linear": {
                "retrievers": [
                    {
                        "retriever": {"standard": {"query": MM}},
                        "weight": 0.5,
                        "normalizer": "minmax",
                    },
                    {
                        "retriever": {"knn": knn_sec(50, 100)},
                        "weight": 2.0,
                        "normalizer": "minmax",
                    },
                ],
                "rank_window_size": 50,
            }
        },
        "size": 10,
        "from": 0,
        "_source": SOURCE,
    }


def spec(**kw: object) -> SearchSpec:
    return SearchSpec(index="docs", query="red fox", **kw)  # type: ignore[arg-type]


def test_plan_bm25_pages_on_the_server_and_needs_no_vector() -> None:
    p = plan(spec(mode="bm25", k=10, from_=30, source=["title"]), CONF, None)
    assert not p.fuse
    assert [(r.name, r.body) for r in p.requests] == [
        ("bm25", {"query": MM, "size": 10, "from": 30, "_source": ["title"]})
    ]


def test_plan_knn_uses_the_window_as_k_so_pages_do_not_change_the_neighbours() -> None:
    p = plan(spec(mode="knn", k=10, from_=10, window=40), CONF, VEC)
    assert [(r.name, r.body) for r in p.requests] == [
        ("knn", {"knn": knn_sec(40, 100), "size": 10, "from": 10, "_source": SOURCE})
    ]


@pytest.mark.parametrize("fusion", ["rrf", "linear"])
def test_plan_client_hybrid_fetches_the_window_of_both_legs_from_zero(fusion: str) -> None:
    p = plan(spec(fusion=fusion, k=10, from_=20, window=100, filter=(TERM,)), CONF, VEC)
    assert p.fuse
    assert [(r.name, r.body) for r in p.requests] == [
        ("bm25", {"query": FILTERED_MM, "size": 100, "from": 0, "_source": SOURCE}),
        (
            "knn",
            {"knn": knn_sec(100, 200, filter=[TERM]), "size": 100, "from": 0, "_source": SOURCE},
        ),
    ]
    assert msearch_lines(p) == [
        {"index": "docs"},
        p.requests[0].body,
        {"index": "docs"},
        p.requests[1].body,
    ]


def test_plan_filter_reaches_both_legs_in_every_hybrid_fusion() -> None:
    for fusion in ("rrf", "linear", "sum", "native_rrf", "native_linear"):
        p = plan(spec(fusion=fusion, filter=(TERM,)), CONF, VEC)
        text = repr([r.body for r in p.requests])
        # once in the bm25 bool filter and once in the knn pre-filter
        assert text.count(repr(TERM)) == 2, fusion


def test_plan_sum_and_native_are_single_requests() -> None:
    s = plan(spec(fusion="sum", num_candidates=300), CONF, VEC)
    assert (s.fuse, s.named_scores, [r.name for r in s.requests]) == (False, True, ["sum"])
    assert s.requests[0].body["knn"]["num_candidates"] == 300
    n = plan(spec(fusion="native_linear"), CONF, VEC)
    assert [r.name for r in n.requests] == ["native"]
    assert "linear" in n.requests[0].body["retriever"]


def test_plan_refuses_vector_modes_without_a_vector() -> None:
    with pytest.raises(ValueError, match="vector"):
        plan(spec(mode="knn"), CONF, None)
