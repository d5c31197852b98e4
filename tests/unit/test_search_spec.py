"""Request validation: defaults, and every bad field named in its error."""

from __future__ import annotations

from typing import Any

import pytest

from es_embed.errors import EmbedError, ErrorKind
from es_embed.search.spec import SearchSpec, spec_from_json


def test_defaults() -> None:
    s = spec_from_json({"index": "docs", "query": "red fox"})
    assert s == SearchSpec(index="docs", query="red fox")
    assert (s.mode, s.fusion, s.k, s.from_, s.window, s.rank_constant) == (
        "hybrid", "auto", 10, 0, 100, 60,
    )  # fmt: skip
    assert s.filter == () and s.source is None and s.weights == {"bm25": 1.0, "knn": 1.0}
    assert s.client_fusion and s.needs_vector


def test_full_request() -> None:
    s = spec_from_json(
        {
            "index": "docs", "query": "q", "mode": "hybrid", "fusion": "native", "k": 5,
            "from": 15, "filter": [{"term": {"a": 1}}], "weights": {"knn": 3},
            "source": ["title"], "window": 50, "rank_constant": 10, "num_candidates": 500,
        }
    )  # fmt: skip
    assert s.fusion == "native_rrf" and not s.client_fusion
    assert (s.k, s.from_, s.window, s.rank_constant, s.num_candidates) == (5, 15, 50, 10, 500)
    assert s.filter == ({"term": {"a": 1}},)
    assert s.weights == {"bm25": 1.0, "knn": 3.0}
    assert s.source == ["title"]
    assert not spec_from_json({"index": "i", "query": "q", "mode": "bm25"}).needs_vector


def test_single_filter_object_becomes_a_one_item_tuple() -> None:
    s = spec_from_json({"index": "i", "query": "q", "filter": {"range": {"n": {"gte": 2}}}})
    assert s.filter == ({"range": {"n": {"gte": 2}}},)


BASE = {"index": "docs", "query": "q"}


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"index": ""}, "index"),
        ({"index": 3}, "index"),
        ({"query": "   "}, "query"),
        ({"mode": "semantic"}, "mode"),
        ({"fusion": "max"}, "fusion"),
        ({"k": 0}, "k"),
        ({"k": "10"}, "k"),
        ({"k": True}, "k"),
        ({"k": 101}, "k"),  # larger than the default window
        ({"from": -1}, "from"),
        ({"window": 0}, "window"),
        ({"window": 20000}, "window"),
        ({"rank_constant": 0}, "rank_constant"),
        ({"num_candidates": 50}, "num_candidates"),  # below the knn leg's k (the window)
        ({"num_candidates": 20000}, "num_candidates"),
        ({"filter": "lang:en"}, "filter"),
        ({"filter": {"term": {"a": 1}, "match": {"b": 2}}}, "filter"),
        ({"filter": [{"term": {"a": 1}}, 7]}, "filter[1]"),
        ({"weights": [1, 2]}, "weights"),
        ({"weights": {"bm25": -1}}, "weights.bm25"),
        ({"weights": {"dense": 1}}, "weights.dense"),
        ({"weights": {"bm25": 0, "knn": 0}}, "weights"),
        ({"source": 5}, "source"),
        ({"size": 10}, "size"),  # unknown field
    ],
)
def test_bad_fields_are_named(patch: dict[str, Any], param: str) -> None:
    with pytest.raises(EmbedError) as info:
        spec_from_json({**BASE, **patch})
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == param
    assert param.split("[")[0].split(".")[0] in info.value.message


@pytest.mark.parametrize("body", [None, [], "text"])
def test_body_must_be_an_object(body: Any) -> None:
    with pytest.raises(EmbedError, match="JSON object"):
        spec_from_json(body)


def test_missing_required_fields() -> None:
    for missing in ("index", "query"):
        with pytest.raises(EmbedError) as info:
            spec_from_json({k: v for k, v in BASE.items() if k != missing})
        assert info.value.param == missing
