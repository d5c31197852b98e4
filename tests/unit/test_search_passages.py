"""Search on a passages index: exact bodies, inner hits to passages, fusion, text and output."""

from __future__ import annotations

from typing import Any

import pytest

from es_embed.cli.search import format_result
from es_embed.config import IndexSettings, PassageSettings
from es_embed.errors import EmbedError
from es_embed.search import fusion
from es_embed.search.builders import plan
from es_embed.search.devconsole import render
from es_embed.search.execute import SearchResult, _cut_passages, _leg_hits
from es_embed.search.fusion import Hit, LegHit
from es_embed.search.passages import PassageHit, PassageRead, from_inner_hits, with_text
from es_embed.search.spec import SearchSpec, spec_from_json

CONF = IndexSettings(name="docs", text_fields=("title", "body"), vector_field="vec", dims=64,
                     passages=PassageSettings(128, 32))  # fmt: skip
VEC = [0.5, -0.25]
INNER = {"size": 3, "_source": False, "docvalue_fields": ["vec.start", "vec.end"]}
SOURCE = {"excludes": ["vec", "_embed"]}
MM = {"multi_match": {"query": "q", "fields": ["title", "body"]}}


def knn(k: int = 100, nc: int = 200, **extra: Any) -> dict[str, Any]:
    return {"field": "vec.vector", "query_vector": VEC, "k": k, "num_candidates": nc, **extra}


def spec(**kw: Any) -> SearchSpec:
    return SearchSpec(index="docs", query="q", **kw)


def test_knn_runs_on_the_nested_vector_with_inner_hits() -> None:
    p = plan(spec(mode="knn", k=10), CONF, VEC)  # type: ignore[arg-type]
    assert p.requests[0].body == {
        "knn": knn(inner_hits=INNER), "size": 10, "from": 0, "_source": SOURCE,
    }  # fmt: skip
    assert p.passages == PassageRead("vec", ("title", "body"))


def test_hybrid_legs_fetch_passages_from_the_knn_leg_only() -> None:
    p = plan(spec(mode="hybrid", passages=5), CONF, VEC)  # type: ignore[arg-type]
    bm25, knn_leg = (leg.body for leg in p.requests)
    assert bm25 == {"query": MM, "size": 100, "from": 0, "_source": SOURCE}
    assert knn_leg["knn"] == knn(inner_hits={**INNER, "size": 5})
    assert p.fuse and p.passages is not None


def test_sum_puts_inner_hits_in_its_knn_section_and_native_has_none() -> None:
    body = plan(spec(mode="hybrid", fusion="sum"), CONF, VEC).requests[0].body  # type: ignore[arg-type]
    assert body["knn"] == knn(inner_hits=INNER, boost=1.0, _name="knn")
    native = plan(spec(mode="hybrid", fusion="native_rrf"), CONF, VEC)  # type: ignore[arg-type]
    retriever = native.requests[0].body["retriever"]["rrf"]["retrievers"][1]
    assert retriever == {"knn": knn()} and native.passages is None


def test_zero_passages_or_bm25_or_a_one_vector_index_ask_for_none() -> None:
    assert "inner_hits" not in plan(spec(mode="knn", passages=0), CONF, VEC).requests[0].body["knn"]  # type: ignore[arg-type]
    assert plan(spec(mode="bm25"), CONF, None).passages is None  # type: ignore[arg-type]
    one = IndexSettings(name="docs", vector_field="vec")
    p = plan(spec(mode="knn"), one, VEC)  # type: ignore[arg-type]
    assert p.requests[0].body["knn"]["field"] == "vec" and p.passages is None


@pytest.mark.parametrize(
    ("source", "asked", "added", "no_source"),
    [
        (False, ["title", "body"], ("title", "body"), True),
        (["title", "url"], ["title", "url", "body"], ("body",), False),
        (["*"], {"includes": ["*"], "excludes": ["_embed"]}, (), False),  # brings the text
        ({"includes": ["url"]}, {"includes": ["url", "title", "body"], "excludes": ["_embed"]},
         ("title", "body"), False),
    ],
)  # fmt: skip
def test_the_text_fields_are_fetched_to_cut_passages(
    source: Any, asked: Any, added: tuple[str, ...], no_source: bool
) -> None:
    p = plan(spec(mode="knn", source=source), CONF, VEC)  # type: ignore[arg-type]
    assert p.requests[0].body["_source"] == asked
    assert p.passages == PassageRead("vec", ("title", "body"), added, no_source)


def test_passages_count_is_validated_naming_the_field() -> None:
    assert spec_from_json({"index": "i", "query": "q"}).passages == 3
    for bad, needle in [(-1, "between 0 and 100"), (101, "between 0 and 100"),
                        ("3", "must be an integer")]:  # fmt: skip
        with pytest.raises(EmbedError) as info:
            spec_from_json({"index": "i", "query": "q", "passages": bad})
        assert info.value.param == "passages" and needle in info.value.message


def inner(*passages: tuple[float, int, int]) -> dict[str, Any]:
    hits = [{"_score": s, "fields": {"vec.start": [a], "vec.end": [b]}} for s, a, b in passages]
    return {"inner_hits": {"vec": {"hits": {"hits": hits}}}}


READ = PassageRead("vec", ("title", "body"))


def test_inner_hits_become_passages_best_first() -> None:
    raw = inner((0.7, 10, 20), (0.9, 30, 40), (0.7, 0, 8))
    assert from_inner_hits(raw, READ) == (
        PassageHit(0.9, 30, 40), PassageHit(0.7, 0, 8), PassageHit(0.7, 10, 20),
    )  # fmt: skip
    assert from_inner_hits({}, READ) == ()


def test_text_is_cut_from_the_joined_fields_and_fetched_fields_go_again() -> None:
    source = {"title": "Manual", "body": "First part. Second part.", "url": "u"}
    passages = [PassageHit(0.9, 19, 31), PassageHit(0.5, 7, 18)]
    cut, kept = with_text(passages, source, PassageRead("vec", ("title", "body"), ("body",)))
    assert [p.text for p in cut] == ["Second part.", "First part."]
    assert kept == {"title": "Manual", "url": "u"} and "body" in source  # not mutated
    cut, kept = with_text(passages, source, PassageRead("vec", ("title", "body"), (), True))
    assert kept is None and cut[0].text == "Second part."
    # A filter excluding the title would shift every offset: no text rather than wrong text.
    p = plan(spec(mode="knn", source={"excludes": ["ti*"]}), CONF, VEC)  # type: ignore[arg-type]
    assert p.passages is not None and p.passages.no_text
    cut, _ = with_text(passages, {"body": source["body"]}, p.passages)
    assert [c.text for c in cut] == [None, None]
    nested = {"doc": {"body": "x", "lang": "en"}}
    _, kept = with_text([], nested, PassageRead("vec", ("doc.body",), ("doc.body",)))
    assert kept == {"doc": {"lang": "en"}}


def test_rrf_keeps_the_knn_legs_passages_and_bm25_only_hits_get_none() -> None:
    raw_knn = [{"_index": "docs", "_id": "a", "_score": 0.9, "_source": {"body": "abc def"},
                **inner((0.9, 4, 7))}]  # fmt: skip
    legs = {
        "bm25": [LegHit("docs", "a", 3.0, {"body": "abc def"}), LegHit("docs", "b", 2.0, {})],
        "knn": _leg_hits(raw_knn, READ),
    }
    hits = fusion.rrf(legs)
    assert hits[0].id == "a" and hits[0].passages == (PassageHit(0.9, 4, 7),)
    assert hits[1].id == "b" and hits[1].passages is None
    _cut_passages(hits, READ)
    assert hits[0].to_json()["passages"] == [{"text": "def", "score": 0.9, "start": 4, "end": 7}]
    assert hits[1].to_json()["passages"] == []


def test_bm25_hits_of_a_plain_search_carry_no_passages_key() -> None:
    (hit,) = _leg_hits([{"_index": "i", "_id": "a", "_score": 1.0, "_source": {}}], None)
    assert "passages" not in fusion.single("bm25", [hit])[0].to_json()


def test_dev_console_says_how_passages_come_back() -> None:
    s = spec(mode="knn")
    text = render(plan(s, CONF, VEC), s)  # type: ignore[arg-type]
    assert "# passages: kNN on the nested vec.vector counts k in documents" in text
    assert '"field": "vec.vector"' in text and '"inner_hits": {' in text


def test_the_cli_prints_each_hits_best_passage() -> None:
    s = spec(mode="knn")
    hit = Hit("docs", "a", 0.9, {"title": "Manual"}, passages=[
        PassageHit(0.9, 7, 19, "Second part."), PassageHit(0.5, 0, 6, "Manual")])  # fmt: skip
    result = SearchResult([hit], 12.0, 3.0, plan(s, CONF, VEC))  # type: ignore[arg-type]
    lines = format_result(result, s).splitlines()
    assert lines[2] == "     Manual"
    assert lines[3] == "     > [7:19] 0.9  Second part."
