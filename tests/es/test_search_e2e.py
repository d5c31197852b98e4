"""Search end to end on a real node with MiniLM: each leg finds what it is good at, hybrid
finds both, filters reach both legs, errors are precise, and the Kibana Dev Tools text
reproduces the answer when sent as it is."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from es_embed.config import IndexSettings
from es_embed.embed.service import EmbeddingService
from es_embed.errors import EmbedError, ErrorKind
from es_embed.indices.resolve import resolve_all, resolve_index
from es_embed.search.devconsole import render
from es_embed.search.execute import Searcher
from es_embed.search.fusion import ZERO_EVIDENCE
from es_embed.search.spec import SearchSpec
from tests.es.search_support import BOTH, DOCS, PARAPHRASE, RARE, corpus, searcher, service
from tests.search_helpers import (
    parse_dev_console,
    reference_auto,
    reference_linear,
    reference_rrf,
    send,
)

pytestmark = pytest.mark.es
__all__ = ["corpus", "searcher", "service"]  # fixtures


def spec(corpus: IndexSettings, query: str, **kw: Any) -> SearchSpec:
    return SearchSpec(index=corpus.name, query=query, **kw)


def ids(result: Any) -> list[str]:
    return [h.id for h in result.hits]


async def test_paraphrase_is_found_by_knn_and_not_by_bm25(
    searcher: Searcher, corpus: IndexSettings
) -> None:
    knn = await searcher.search(spec(corpus, PARAPHRASE, mode="knn", k=3))
    assert ids(knn)[0] == "cat"
    assert knn.hits[0].legs["knn"].rank == 1 and knn.embed_ms > 0
    bm25 = await searcher.search(spec(corpus, PARAPHRASE, mode="bm25"))
    assert "cat" not in ids(bm25)


async def test_rare_token_is_found_by_bm25(searcher: Searcher, corpus: IndexSettings) -> None:
    bm25 = await searcher.search(spec(corpus, RARE, mode="bm25", k=3))
    assert ids(bm25) == ["code"]
    assert bm25.embed_ms == 0 and bm25.hits[0].legs["bm25"].rank == 1


@pytest.mark.parametrize("fusion", ["auto", "rrf", "linear", "sum"])
async def test_hybrid_finds_both(searcher: Searcher, corpus: IndexSettings, fusion: str) -> None:
    result = await searcher.search(spec(corpus, BOTH, fusion=fusion, k=3))
    assert {"cat", "code"} <= set(ids(result)[:2]), [(h.id, h.score) for h in result.hits]
    by_id = {h.id: h for h in result.hits}
    assert set(by_id["code"].legs) >= {"bm25"}
    assert "knn" in by_id["cat"].legs
    if fusion != "sum":
        assert "bm25" not in by_id["cat"].legs  # the paraphrase came from the kNN leg alone
        assert by_id["cat"].legs["knn"].rank is not None


async def test_filter_applies_to_both_legs(searcher: Searcher, corpus: IndexSettings) -> None:
    pets = {"term": {"topic": "pets"}}
    result = await searcher.search(spec(corpus, BOTH, k=10, window=10, filter=(pets,)))
    assert result.hits and all(h.source["topic"] == "pets" for h in result.hits)
    assert "code" not in ids(result)  # bm25's only match is filtered out of that leg too
    assert all("bm25" not in h.legs for h in result.hits)
    tech = await searcher.search(
        spec(corpus, BOTH, k=10, window=10, filter=({"term": {"topic": "tech"}},))
    )
    assert set(ids(tech)) == {"code", "engine", "python"}
    assert "bm25" in {leg for h in tech.hits for leg in h.legs}


async def test_pages_tile_the_fused_window(searcher: Searcher, corpus: IndexSettings) -> None:
    full = await searcher.search(spec(corpus, BOTH, k=16, window=16))
    pages = [
        await searcher.search(spec(corpus, BOTH, k=5, from_=f, window=16)) for f in (0, 5, 10, 15)
    ]
    assert [h.id for p in pages for h in p.hits] == ids(full)
    assert [h.score for p in pages for h in p.hits] == [h.score for h in full.hits]


async def test_source_defaults_to_everything_but_the_vector(
    searcher: Searcher, corpus: IndexSettings
) -> None:
    result = await searcher.search(spec(corpus, RARE, mode="bm25"))
    assert set(result.hits[0].source) == {"title", "text", "topic"}
    only = await searcher.search(spec(corpus, RARE, mode="bm25", source=["title"]))
    assert only.hits[0].source == {"title": "Flux unit fault"}


async def test_unknown_index_and_bad_filter_are_precise_errors(
    aes: AsyncElasticsearch, service: EmbeddingService, corpus: IndexSettings
) -> None:
    ghost = IndexSettings(name=f"{corpus.name}-ghost")
    searcher = Searcher(aes, service.embed_query, resolve_all([corpus, ghost], service.info.shape))
    with pytest.raises(EmbedError) as info:
        await searcher.search(SearchSpec(index="nope", query="x"))
    assert (info.value.kind, info.value.param) == (ErrorKind.NOT_FOUND, "index")
    assert "'nope'" in info.value.message
    with pytest.raises(EmbedError) as info:  # configured but missing in Elasticsearch
        await searcher.search(SearchSpec(index=ghost.name, query="x"))
    assert info.value.kind is ErrorKind.NOT_FOUND and ghost.name in info.value.message
    with pytest.raises(EmbedError) as info:
        await searcher.search(spec(corpus, "x", filter=({"range": {"topic": {"bogus": 1}}},)))
    assert (info.value.kind, info.value.param) == (ErrorKind.INVALID_REQUEST, "filter")


async def test_native_fusion_is_refused_clearly_where_unavailable(
    searcher: Searcher, corpus: IndexSettings, es: Elasticsearch
) -> None:
    licence = es.license.get()["license"]["type"]
    if licence not in ("basic", "standard", "gold"):
        pytest.skip(f"this node has a {licence} licence; the refusal needs one without retrievers")
    for fusion in ("native_rrf", "native_linear"):
        with pytest.raises(EmbedError) as info:
            await searcher.search(spec(corpus, BOTH, fusion=fusion))
        assert (info.value.kind, info.value.param) == (ErrorKind.UNPROCESSABLE, "fusion")
        assert licence in info.value.message


# ---- acceptance: the Dev Tools text reproduces the answer --------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": "bm25"},
        {"mode": "knn"},
        {"fusion": "sum"},
        {"mode": "knn", "filter": ({"term": {"topic": "pets"}},)},
    ],
    ids=["bm25", "knn", "sum", "knn-filter"],
)
async def test_dev_console_single_request_returns_the_same_hits(
    searcher: Searcher, corpus: IndexSettings, es: Elasticsearch, kw: dict[str, Any]
) -> None:
    s = spec(corpus, BOTH, k=10, **kw)
    p, _ = await searcher.prepare(s)
    ((method, path, body),) = parse_dev_console(render(p, s))
    pasted = send(es, method, path, body)["hits"]["hits"]
    ours = await searcher.run(p, s)
    assert [(h["_id"], h["_score"]) for h in pasted] == [(h.id, h.score) for h in ours]
    assert len(ours) == min(10, len(DOCS)) or kw.get("mode") == "bm25" or "filter" in kw


@pytest.mark.parametrize("fusion", ["auto", "rrf", "linear"])
async def test_dev_console_legs_fused_by_the_documented_formula_give_the_same_top_10(
    searcher: Searcher, corpus: IndexSettings, es: Elasticsearch, fusion: str
) -> None:
    s = spec(corpus, BOTH, fusion=fusion, k=10, window=12, weights={"bm25": 0.7, "knn": 1.3})
    p, _ = await searcher.prepare(s)
    text = render(p, s)
    legs = [send(es, m, path, body)["hits"]["hits"] for m, path, body in parse_dev_console(text)]
    assert len(legs) == 2 and legs[0] and legs[1]
    if fusion == "rrf":
        assert "1 / (60 + r)" in text
        expected = reference_rrf([[h["_id"] for h in leg] for leg in legs], 60, window=12)
    elif fusion == "auto":
        # knn's weight is the request's 1.3 times the fitted 0.5; a cosine index: z = 0.5
        assert "score = 0.7 * (e_bm25 - f_bm25) + 0.65 * (e_knn - f_knn)" in text
        assert "knn 0.5 for cosine" in text and "returned 12 hits" in text
        pairs = [[(h["_id"], h["_score"]) for h in leg] for leg in legs]
        expected = reference_auto(pairs, [0.7, 0.65], [0.0, 0.5], window=12)
    else:
        assert "0.7 * mm_bm25 + 1.3 * mm_knn" in text
        pairs = [[(h["_id"], h["_score"]) for h in leg] for leg in legs]
        expected = reference_linear(pairs, [0.7, 1.3], window=12)
    result = await searcher.run(p, s)
    assert [h.id for h in result] == [doc for doc, _ in expected[:10]]
    assert [h.score for h in result] == pytest.approx([score for _, score in expected[:10]])


async def test_auto_the_default_measures_a_full_leg_from_its_last_hit(
    searcher: Searcher, corpus: IndexSettings, es: Elasticsearch
) -> None:
    s = spec(corpus, BOTH, k=4, window=4)
    assert s.fusion == "auto"
    p, _ = await searcher.prepare(s)
    text = render(p, s)
    legs = [send(es, m, path, body)["hits"]["hits"] for m, path, body in parse_dev_console(text)]
    pairs = [[(h["_id"], h["_score"]) for h in leg] for leg in legs]
    # knn filled its window of 4 and its last hit has evidence (cosine > 0): f_knn > 0
    assert len(pairs[1]) == 4 and pairs[1][-1][1] > 0.5
    expected = reference_auto(pairs, [1.0, 0.5], [0.0, 0.5], window=4)
    result = await searcher.run(p, s)
    assert [h.id for h in result] == [doc for doc, _ in expected[:4]]
    assert [h.score for h in result] == pytest.approx([score for _, score in expected[:4]])


@pytest.mark.parametrize("similarity", sorted(ZERO_EVIDENCE))
def test_zero_evidence_is_the_knn_score_of_an_orthogonal_document(
    es: Elasticsearch, similarity: str
) -> None:
    index = f"zero-evidence-{similarity.replace('_', '-')}"
    vector = {"type": "dense_vector", "dims": 2, "similarity": similarity}
    vector["index_options"] = {"type": "hnsw"}  # unquantized: the score is the formula's
    es.indices.create(index=index, mappings={"properties": {"v": vector}})
    try:
        es.index(index=index, id="same", document={"v": [1.0, 0.0]})
        es.index(index=index, id="orthogonal", document={"v": [0.0, 1.0]}, refresh=True)
        knn = {"field": "v", "query_vector": [1.0, 0.0], "k": 2, "num_candidates": 2}
        hits = es.search(index=index, knn=knn)["hits"]["hits"]
        scores = {h["_id"]: h["_score"] for h in hits}
        assert scores["orthogonal"] == pytest.approx(ZERO_EVIDENCE[similarity])
        assert scores["same"] > scores["orthogonal"]
    finally:
        es.indices.delete(index=index)


async def test_query_vector_is_the_query_lane_embedding_at_the_index_dims(
    aes: AsyncElasticsearch, service: EmbeddingService, corpus: IndexSettings
) -> None:
    seen: list[tuple[str, int | None]] = []

    async def embed(text: str, dims: int | None) -> np.ndarray:
        seen.append((text, dims))
        return await service.embed_query(text, dims)

    conf = IndexSettings(
        name=corpus.name, text_fields=corpus.text_fields, vector_field="embedding", dims=384
    )
    searcher = Searcher(aes, embed, [resolve_index(conf, service.info.shape)])
    p, _ = await searcher.prepare(SearchSpec(index=corpus.name, query=PARAPHRASE, mode="knn"))
    assert seen == [(PARAPHRASE, 384)]
    expected = await service.embed_query(PARAPHRASE, 384)
    assert np.array_equal(
        np.asarray(p.requests[0].body["knn"]["query_vector"], np.float32), expected
    )
