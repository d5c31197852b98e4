"""Rerank on a passages index, with a scripted Elasticsearch and a recording reranker: each
hit is read as its best passage (title, newline, passage), from the kNN leg's inner hit or,
for a hit that came without one, from one more nested kNN search restricted to those hits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from es_embed.config import IndexSettings, PassageSettings
from es_embed.indices.resolve import IndexTarget
from es_embed.search.builders import ids_query, plan
from es_embed.search.devconsole import render
from es_embed.search.execute import Searcher
from es_embed.search.passages import PassageHit
from es_embed.search.rerank import (
    RerankStage,
    best_passage_body,
    passage_text,
    plan_vector,
)
from es_embed.search.spec import SearchSpec
from tests.search_helpers import parse_dev_console

CONF = IndexSettings(name="docs", text_fields=("title", "body"), vector_field="vec", dims=2,
                     passages=PassageSettings(128, 32))  # fmt: skip
TARGET = IndexTarget(name="docs", text_fields=("title", "body"), vector_field="vec", dims=2,
                     similarity="cosine", model="m", conf=CONF, passages=CONF.passages)  # fmt: skip
VEC = [0.5, -0.25]
DOCS = {f"d{i}": {"title": f"T{i}", "body": f"first {i}. middle {i}. last {i}."}
        for i in range(4)}  # fmt: skip
JOINED = "T0\nfirst 0. middle 0. last 0."  # the same offsets for every document
MIDDLE = (JOINED.index("middle"), JOINED.index("middle") + len("middle 0."))
LAST = (JOINED.index("last"), len(JOINED))


def inner(start: int, end: int, score: float = 0.9) -> dict[str, Any]:
    fields = {"vec.start": [start], "vec.end": [end]}
    return {"vec": {"hits": {"hits": [{"_score": score, "fields": fields}]}}}


class ScriptedES:
    """bm25 finds d0..d3 in order; the knn leg finds d0 and d1 with their middle sentence;
    the restricted nested kNN finds the ids it is given, each with its last sentence, but
    never d3 (a document not embedded yet). Records every search body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        if "query" in body:  # bm25
            hits = [self.hit(i, 10.0 - n) for n, i in enumerate(DOCS)]
        elif body["knn"]["k"] == 100:  # the hybrid's knn leg
            hits = [self.hit(i, 0.9, inner(*MIDDLE)) for i in ("d0", "d1")]
        else:  # the rerank stage's restricted search
            wanted = [i for i in DOCS if f"'{i}'" in str(body["knn"]["filter"]) and i != "d3"]
            hits = [self.hit(i, 0.8, inner(*LAST)) for i in wanted]
        return {"hits": {"hits": hits}}

    @staticmethod
    def hit(doc_id: str, score: float, inner_hits: Any = None) -> dict[str, Any]:
        raw = {"_index": "docs", "_id": doc_id, "_score": score, "_source": DOCS[doc_id]}
        return raw if inner_hits is None else {**raw, "inner_hits": inner_hits}

    async def search(self, *, index: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return self.answer(body)

    async def msearch(self, *, searches: list[dict[str, Any]]) -> dict[str, Any]:
        return {"responses": [self.answer(b) for b in searches[1::2]]}


class Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, query: str, documents: Sequence[str]) -> np.ndarray:
        self.texts = list(documents)
        return np.linspace(0.1, 0.9, len(documents), dtype=np.float32)


class Embedder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    async def __call__(self, text: str, dims: int | None) -> np.ndarray:
        self.calls.append((text, dims))
        return np.asarray(VEC, dtype=np.float32)


def run(es: ScriptedES, **kw: Any) -> tuple[Any, Recorder, Embedder]:
    scorer, embed = Recorder(), Embedder()
    searcher = Searcher(es, embed, [TARGET], rerank=RerankStage("r", scorer))  # type: ignore[arg-type]
    return searcher.search(SearchSpec(index="docs", query="q", **kw)), scorer, embed


def sentence(i: int, span: tuple[int, int]) -> str:
    return f"T{i}\n" + f"T{i}\n{DOCS[f'd{i}']['body']}"[span[0] : span[1]]


async def test_bm25_hits_are_read_as_the_passage_the_knn_would_pick() -> None:
    es = ScriptedES()
    search, scorer, embed = run(es, mode="bm25", rerank=4, k=4)
    result = await search
    # bm25 has no vector: the query is embedded once, at the index's dims, for the search.
    assert embed.calls == [("q", 2)]
    keys = [("docs", f"d{i}") for i in range(4)]
    assert es.bodies[1] == best_passage_body(keys, "vec", VEC, ("title", "body"))
    # d0..d2 by their last sentence, with the title as context; d3 (no passages) whole.
    whole = "T3\n" + DOCS["d3"]["body"]
    assert scorer.texts == [sentence(i, LAST) for i in range(3)] + [whole]
    assert [h.id for h in result.hits] == ["d3", "d2", "d1", "d0"]  # by the recorder's scores
    assert all(h.passages is None for h in result.hits)  # bm25 answers carry no passages


async def test_hybrid_reads_inner_hits_and_asks_only_for_the_rest() -> None:
    es = ScriptedES()
    search, scorer, embed = run(es, rerank=4, k=4)
    result = await search
    assert embed.calls == [("q", 2)]  # the search's own embedding, reused for the passages
    # d0 and d1 came with the knn leg's middle sentence; d2 and d3 only from bm25.
    assert es.bodies[2] == best_passage_body(
        [("docs", "d2"), ("docs", "d3")], "vec", VEC, ("title", "body")
    )
    assert scorer.texts == [sentence(0, MIDDLE), sentence(1, MIDDLE), sentence(2, LAST),
                            "T3\n" + DOCS["d3"]["body"]]  # fmt: skip
    # The answer's passages are still the kNN leg's (with their text), none for bm25-only hits.
    by_id = {h.id: h for h in result.hits}
    assert [p.text for p in by_id["d0"].passages] == [sentence(0, MIDDLE)[3:]]
    assert by_id["d2"].passages == []


async def test_no_second_search_when_every_hit_has_its_passage() -> None:
    es = ScriptedES()
    search, scorer, _ = run(es, mode="knn", rerank=2, k=2)
    await search
    assert len(es.bodies) == 1
    assert scorer.texts == [sentence(0, MIDDLE), sentence(1, MIDDLE)]


def test_the_restricted_search_is_the_nested_knn_on_exactly_those_hits() -> None:
    body = best_passage_body([("a", "1"), ("b", "2")], "vec", VEC, ("title", "body"))
    assert body == {
        "knn": {
            "field": "vec.vector", "query_vector": VEC, "k": 2, "num_candidates": 100,
            "filter": [ids_query([("a", "1"), ("b", "2")])],
            "inner_hits": {"size": 1, "_source": False,
                           "docvalue_fields": ["vec.start", "vec.end"]},
        },
        "size": 2,
        "_source": ["title", "body"],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("source", "passage", "text"),
    [
        ({"title": "T", "body": "aaa. bbb."}, PassageHit(1, 7, 11), "T\nbbb."),
        ({"title": "T", "body": "aaa. bbb."}, PassageHit(1, 2, 6), "T\naaa."),  # the first
        ({"body": "aaa. bbb."}, PassageHit(1, 5, 9), "bbb."),  # no title
        ({"title": "T", "body": "aaa."}, PassageHit(1, 2, 60), "T\naaa."),  # text changed
        ({"title": "T", "body": "aaa."}, None, "T\naaa."),  # no passages yet: whole
        (None, PassageHit(1, 0, 1), ""),
    ],
)
def test_passage_text_is_what_was_embedded(
    source: Any, passage: PassageHit | None, text: str
) -> None:
    assert passage_text(source, ("title", "body"), passage) == text


def test_plan_vector_finds_the_query_vector_of_any_plan() -> None:
    for mode, fusion in [("knn", "auto"), ("hybrid", "auto"), ("hybrid", "sum"),
                         ("hybrid", "native_rrf")]:  # fmt: skip
        p = plan(SearchSpec(index="docs", query="q", mode=mode, fusion=fusion), TARGET, VEC)
        assert plan_vector(p) == VEC, (mode, fusion)
    assert plan_vector(plan(SearchSpec(index="docs", query="q", mode="bm25"), TARGET, None)) is None


def test_dev_console_says_the_reranker_reads_passages() -> None:
    spec = SearchSpec(index="docs", query="q", rerank=10)
    text = render(plan(spec, TARGET, VEC), spec, "r")
    assert "reads each hit's best passage" in text and "knn on vec.vector" in text
    assert len(parse_dev_console(text)) == 2
    one = IndexTarget(name="docs", text_fields=("title",), vector_field="vec", dims=2,
                      similarity="cosine", model="m", conf=CONF)  # fmt: skip
    assert "passage" not in render(plan(spec, one, VEC), spec, "r")
