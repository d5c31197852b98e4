"""The search boundary without a node: which filters are refused (naming the clause), which
pass untouched, the ``_embed`` record left out of ``_source``, and which Elasticsearch
refusals are withheld because they name another index."""

from __future__ import annotations

from typing import Any

import pytest

from es_embed.errors import EmbedError, ErrorKind
from es_embed.search.builders import source_filter
from es_embed.search.fusion import LegHit, linear
from es_embed.search.refusal import foreign, mentioned_indices
from es_embed.search.spec import MAX_WEIGHT, spec_from_json

LOOKUP = {"index": "secrets", "id": "s2", "path": "api.key"}
SCRIPT = {"source": "doc['n'].value > 1"}


def refusal(filter_: Any, allow_scripts: bool = False) -> EmbedError:
    with pytest.raises(EmbedError) as info:
        spec_from_json(
            {"index": "docs", "query": "q", "filter": filter_}, allow_scripts=allow_scripts
        )
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    return info.value


@pytest.mark.parametrize(
    ("filter_", "param"),
    [
        ({"terms": {"tags": LOOKUP}}, "filter.terms"),
        ({"bool": {"must": [{"match_all": {}}, {"terms": {"tags": LOOKUP}}]}},
         "filter.bool.must[1].terms"),
        ([{"term": {"a": 1}}, {"geo_shape": {"f": {"indexed_shape": LOOKUP}}}],
         "filter[1].geo_shape"),
        ({"shape": {"f": {"indexed_shape": LOOKUP}}}, "filter.shape"),
        ({"nested": {"path": "p", "query": {"bool": {"filter": {"has_child": {
            "type": "c", "query": {"terms": {"x": LOOKUP}}}}}}}},
         "filter.nested.query.bool.filter.has_child.query.terms"),
        ({"more_like_this": {"fields": ["t"], "like": [{"_index": "secrets", "_id": "1"}]}},
         "filter.more_like_this"),
        ({"more_like_this": {"like": "text", "unlike": {"_id": "1"}}}, "filter.more_like_this"),
        ({"percolate": {"field": "q", "index": "secrets", "id": "1"}}, "filter.percolate"),
        ({"wrapper": {"query": "eyJtYXRjaF9hbGwiOnt9fQ=="}}, "filter.wrapper"),
        ({"rule": {"ruleset_ids": ["r"], "match_criteria": {}, "organic": {"match_all": {}}}},
         "filter.rule"),
        ({"script": {"script": SCRIPT}}, "filter.script"),
        ({"bool": {"should": [{"script_score": {"query": {"match_all": {}}, "script": SCRIPT}}]}},
         "filter.bool.should[0].script_score"),
        ({"function_score": {"query": {"match_all": {}},
                             "functions": [{"script_score": {"script": SCRIPT}}]}},
         "filter.function_score.functions[0].script_score"),
        ({"terms_set": {"tags": {"terms": ["a"], "minimum_should_match_script": SCRIPT}}},
         "filter.terms_set.tags"),
        ({"intervals": {"t": {"match": {"query": "x", "filter": {"script": SCRIPT}}}}},
         "filter.intervals.t"),
        ({"knn": {"field": "v", "query_vector": [1.0], "filter": {"terms": {"t": LOOKUP}}}},
         "filter.knn.filter.terms"),
        ({"nested": {"path": "p", "query": {"match_all": {}}, "inner_hits": {
            "script_fields": {"x": {"script": SCRIPT}}}}},
         "filter.nested.inner_hits.script_fields.x.script"),
    ],
)  # fmt: skip
def test_lookups_and_scripts_are_refused_naming_the_clause(filter_: Any, param: str) -> None:
    error = refusal(filter_)
    assert error.param == param
    assert error.message.startswith(param)
    assert error.code in ("lookup_not_allowed", "script_not_allowed")


def test_deep_lookups_are_found() -> None:
    node: dict[str, Any] = {"terms": {"t": LOOKUP}}
    for _ in range(30):
        node = {"bool": {"filter": [node]}}
    error = refusal(node)
    assert error.param == "filter" + ".bool.filter[0]" * 30 + ".terms"


@pytest.mark.parametrize(
    "filter_",
    [
        {"terms": {"tags": ["a", "b"], "boost": 2.0}},
        {"term": {"script": "a field called script"}},
        {"match": {"terms": {"query": "a field called terms"}}},
        {"range": {"percolate": {"gte": 1}}},
        {"geo_shape": {"f": {"shape": {"type": "point", "coordinates": [1, 2]}}}},
        {"more_like_this": {"fields": ["t"], "like": ["some text", {"doc": {"t": "x"}}]}},
        {"percolate": {"field": "q", "document": {"script": "not run", "index": "a field"}}},
        {"nested": {"path": "script", "query": {"bool": {"must_not": {"exists": {"field": "x"}}}}}},
        {"intervals": {"script": {"match": {"query": "a field called script"}}}},
        [{"ids": {"values": ["1"]}}, {"query_string": {"query": "_index:secrets"}}],
    ],
)
def test_filters_reading_only_the_searched_index_pass_untouched(filter_: Any) -> None:
    spec = spec_from_json({"index": "docs", "query": "q", "filter": filter_})
    assert list(spec.filter) == (filter_ if isinstance(filter_, list) else [filter_])


def test_scripts_pass_where_allowed_but_lookups_never() -> None:
    allowed = [
        {"script": {"script": SCRIPT}},
        {"script_score": {"query": {"match_all": {}}, "script": SCRIPT}},
        {"terms_set": {"t": {"terms": ["a"], "minimum_should_match_script": SCRIPT}}},
    ]
    for f in allowed:
        spec = spec_from_json({"index": "d", "query": "q", "filter": f}, allow_scripts=True)
        assert spec.filter == (f,)
    wrapped = {"script_score": {"query": {"terms": {"t": LOOKUP}}, "script": SCRIPT}}
    assert refusal(wrapped, allow_scripts=True).param == "filter.script_score.query.terms"


# ---- _embed stays out of _source unless named ------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (None, {"excludes": ["vec", "_embed"]}),
        (True, {"excludes": ["_embed"]}),
        (False, False),
        (["title", "topic"], ["title", "topic"]),
        (["_embed", "title"], ["_embed", "title"]),
        (["_embed.hash"], ["_embed.hash"]),
        (["t*"], {"includes": ["t*"], "excludes": ["_embed"]}),
        (["*"], {"includes": ["*"], "excludes": ["_embed"]}),
        ({"excludes": "vec"}, {"excludes": ["vec", "_embed"]}),
        ({"includes": ["*"], "exclude": ["x"]}, {"includes": ["*"], "exclude": ["x", "_embed"]}),
        ({"includes": ["_embed"]}, {"includes": ["_embed"]}),
    ],
)
def test_embed_record_only_when_named(source: Any, expected: Any) -> None:
    assert source_filter(source, "vec") == expected


@pytest.mark.parametrize(
    ("source", "param"),
    [({"include_fields": ["a"]}, "source.include_fields"), ({"excludes": [1]}, "source.excludes")],
)
def test_source_filters_are_checked(source: Any, param: str) -> None:
    with pytest.raises(EmbedError) as info:
        spec_from_json({"index": "docs", "query": "q", "source": source})
    assert info.value.param == param


# ---- refusals naming other indices ----------------------------------------------------


def es_error(reason: str, **extra: Any) -> dict[str, Any]:
    cause = {"type": "x_exception", "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": 400}


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (es_error("no such index [secrets]", index="secrets", **{
            "resource.type": "index_or_alias", "resource.id": "secrets"}), {"secrets"}),
        (es_error("action [indices:data/read/get] is unauthorized for API key id [k] of user "
                  "[u] on indices [secrets, other], this action is granted by the index "
                  "privileges [read,all]"), {"secrets", "other"}),
        (es_error("failed to create query: [docs] index is closed"), {"docs"}),
        (es_error("Unknown geometry type: foo"), set()),
        (es_error("field [t] of type [text] does not support [x]", index="docs-000001",
                  index_uuid="u"), {"docs-000001"}),
    ],
)  # fmt: skip
def test_index_names_in_refusals(body: dict[str, Any], names: set[str]) -> None:
    assert mentioned_indices(body) == names


def test_names_behind_the_searched_one_are_not_foreign() -> None:
    body = es_error("boom", index="docs-000001")
    assert foreign(body, "docs") == {"docs-000001"}
    assert foreign(body, "docs", ["docs-000001", "docs-000002"]) == set()


# ---- finite output ------------------------------------------------------------------------


def test_linear_fusion_at_the_weight_bound_stays_finite() -> None:
    legs = {
        "bm25": [LegHit("d", "a", 3.0e38), LegHit("d", "b", 0.0)],
        "knn": [LegHit("d", "a", 1.0), LegHit("d", "c", 0.5)],
    }
    fused = linear(legs, weights={"bm25": MAX_WEIGHT, "knn": MAX_WEIGHT})
    assert [h.id for h in fused][0] == "a"
    assert all(abs(h.score) < float("inf") for h in fused)
