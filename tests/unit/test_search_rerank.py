"""Rerank inside search, with a fake reranker callable and a scripted Elasticsearch: the
window's bounds, the exact order and legs, paging after the rerank, the text it reads (the
follower's joined text fields) and the caller's source filter left as it was."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.search import post_search
from es_embed.cli.search import register, spec_from_args
from es_embed.config import IndexSettings
from es_embed.errors import EmbedError, ErrorKind
from es_embed.indices.resolve import text_only
from es_embed.search.builders import plan, text_body
from es_embed.search.devconsole import render
from es_embed.search.execute import Searcher
from es_embed.search.fusion import Hit, LegScore
from es_embed.search.rerank import RerankStage, reorder
from es_embed.search.spec import SearchSpec, spec_from_json
from tests.search_helpers import parse_dev_console

TARGET = text_only(IndexSettings(name="docs", text_fields=("title", "body")), "m")
# Ten documents; BM25 ranks them d0..d9, the reranker (below) prefers higher numbers.
CORPUS = {f"d{i}": {"title": f"title {i}", "body": f"body {i}", "tag": "t"} for i in range(10)}
BM25_ORDER = [f"d{i}" for i in range(10)]


class ScriptedES:
    """bm25 ``_search`` answers ``BM25_ORDER`` (honouring size, from and ``_source``); a
    search by ``_id`` answers those documents. Records every body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def search(self, *, index: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.bodies.append(body)
        if "multi_match" in str(body["query"]):
            ids = BM25_ORDER[body["from"] : body["from"] + body["size"]]
        else:
            ids = [i for i in CORPUS if f"'{i}'" in str(body["query"])]
        hits = [
            {"_index": "docs", "_id": i, "_score": 10.0 - n, "_source": pick(i, body["_source"])}
            for n, i in enumerate(ids)
        ]
        return {"hits": {"hits": hits}}


def pick(doc_id: str, source: Any) -> Any:
    """The fake's source filtering: a list of fields, or everything."""
    doc = CORPUS[doc_id]
    return {k: v for k, v in doc.items() if k in source} if isinstance(source, list) else doc


class FakeRerank:
    """Scores a text by the number in it (so d9 is best); records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, query: str, documents: Sequence[str]) -> np.ndarray:
        self.calls.append((query, list(documents)))
        return np.asarray([float(d.split()[-1]) / 10 for d in documents], dtype=np.float32)


async def no_embedding(text: str, dims: int | None) -> np.ndarray:
    raise AssertionError("bm25 needs no vector")


def searcher(es: ScriptedES, scorer: FakeRerank | None) -> Searcher:
    stage = RerankStage("tiny-reranker", scorer) if scorer is not None else None
    return Searcher(es, no_embedding, [TARGET], rerank=stage)  # type: ignore[arg-type]


def bm25(**kw: Any) -> SearchSpec:
    return SearchSpec(index="docs", query="q", mode="bm25", **kw)


# -- the request field -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rerank", "param"),
    [
        ({"window": 0}, "rerank.window"),
        ({"window": 101}, "rerank.window"),  # above the window (100 by default)
        ({"window": "5"}, "rerank.window"),
        ({"window": True}, "rerank.window"),
        ({"window": 5, "size": 5}, "rerank.size"),
        ({}, "rerank.window"),
        (5, "rerank"),
        ([5], "rerank"),
    ],
)
def test_bad_rerank_names_the_field(rerank: Any, param: str) -> None:
    with pytest.raises(EmbedError) as info:
        spec_from_json({"index": "docs", "query": "q", "rerank": rerank})
    assert info.value.kind is ErrorKind.INVALID_REQUEST and info.value.param == param


def test_rerank_window_may_be_the_whole_window_and_no_more() -> None:
    raw = {"index": "docs", "query": "q", "window": 20}
    assert spec_from_json({**raw, "rerank": {"window": 20}}).rerank == 20
    assert spec_from_json({**raw, "rerank": {"window": 1}}).rerank == 1
    with pytest.raises(EmbedError) as info:
        spec_from_json({**raw, "rerank": {"window": 21}})
    assert info.value.param == "rerank.window" and "between 1 and 20" in info.value.message


def test_cli_rerank_flag_becomes_the_field() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["search", "q", "--index", "docs", "--rerank", "7"])
    assert spec_from_args(args).rerank == 7
    args = parser.parse_args(["search", "q", "--index", "docs", "--rerank", "0"])
    with pytest.raises(EmbedError) as info:
        spec_from_args(args)
    assert info.value.param == "rerank.window"


async def test_rerank_without_a_reranker_is_422_naming_rerank() -> None:
    from aiohttp import web

    from es_embed.api.errors import error_middleware
    from es_embed.api.search import SEARCHER

    es = ScriptedES()
    app = web.Application(middlewares=[error_middleware])
    app[SEARCHER] = searcher(es, None)
    app.router.add_post("/v1/search", post_search)
    async with TestClient(TestServer(app)) as client:
        body = {"index": "docs", "query": "q", "mode": "bm25", "rerank": {"window": 5}}
        resp = await client.post("/v1/search", json=body)
        error = (await resp.json())["error"]
    assert resp.status == 422 and error["param"] == "rerank"
    assert "reranker.name" in error["message"] and es.bodies == []


# -- the order ----------------------------------------------------------------------------


def hit(doc_id: str, score: float) -> Hit:
    return Hit("docs", doc_id, score, None, {"bm25": LegScore(1, score, score)})


def test_reorder_ranks_the_top_by_score_and_keeps_the_rest() -> None:
    hits = [hit(f"h{i}", 5.0 - i) for i in range(5)]
    out = reorder(hits, [0.1, 0.9, 0.5])
    assert [h.id for h in out] == ["h1", "h2", "h0", "h3", "h4"]
    assert [(h.legs["rerank"].rank, h.legs["rerank"].score) for h in out[:3]] == [
        (1, pytest.approx(0.9)),
        (2, pytest.approx(0.5)),
        (3, pytest.approx(0.1)),
    ]
    assert all("rerank" not in h.legs for h in out[3:]) and out[3:] == hits[3:]
    # The first stage's score and legs stay as they were; the input is not changed.
    assert out[0].score == 4.0 and out[0].legs["bm25"] == hits[1].legs["bm25"]
    assert "rerank" not in hits[1].legs


def test_reorder_ties_keep_the_ranked_order() -> None:
    hits = [hit(f"h{i}", 5.0 - i) for i in range(4)]
    assert [h.id for h in reorder(hits, [0.2, 0.7, 0.7, 0.2])] == ["h1", "h2", "h0", "h3"]


async def test_search_reranks_the_top_n_then_pages() -> None:
    es, scorer = ScriptedES(), FakeRerank()
    result = await searcher(es, scorer).search(bm25(window=10, rerank=4, k=6))
    # d0..d3 reranked by their number (d3 best), d4.. after them in BM25 order.
    assert [h.id for h in result.hits] == ["d3", "d2", "d1", "d0", "d4", "d5"]
    assert [h.legs["rerank"].rank for h in result.hits[:4]] == [1, 2, 3, 4]
    assert [h.legs["rerank"].score for h in result.hits[:4]] == pytest.approx([0.3, 0.2, 0.1, 0])
    assert [h.legs["bm25"].rank for h in result.hits] == [4, 3, 2, 1, 5, 6]
    assert all("rerank" not in h.legs for h in result.hits[4:])
    # The reranker saw the follower's text (text fields joined by a newline), top 4 only.
    assert scorer.calls == [("q", [f"title {i}\nbody {i}" for i in range(4)])]
    # The single search fetched the window from 0, so the page is cut after the rerank.
    (body,) = es.bodies
    assert (body["size"], body["from"]) == (10, 0)
    assert result.rerank_ms is not None and "rerank_ms" in result.to_json()
    assert result.to_json()["hits"][0]["legs"]["rerank"] == {
        "rank": 1,
        "score": float(np.float32(0.3)),
    }


async def test_second_page_comes_from_the_same_reranked_list() -> None:
    es, scorer = ScriptedES(), FakeRerank()
    first = await searcher(es, scorer).search(bm25(window=10, rerank=4, k=3))
    second = await searcher(es, scorer).search(bm25(window=10, rerank=4, k=3, from_=3))
    assert [h.id for h in first.hits + second.hits] == ["d3", "d2", "d1", "d0", "d4", "d5"]


async def test_without_rerank_nothing_changes() -> None:
    es = ScriptedES()
    result = await searcher(es, FakeRerank()).search(bm25(k=3, from_=2))
    assert [h.id for h in result.hits] == ["d2", "d3", "d4"]
    assert (es.bodies[0]["size"], es.bodies[0]["from"]) == (3, 2)
    assert result.rerank_ms is None and "rerank_ms" not in result.to_json()


# -- the text comes from _source; the caller's filter stays --------------------------------


async def test_default_source_holds_the_text_and_no_second_search() -> None:
    es, scorer = ScriptedES(), FakeRerank()
    await searcher(es, scorer).search(bm25(window=10, rerank=3))
    assert len(es.bodies) == 1


async def test_a_source_filter_without_the_text_gets_it_read_apart() -> None:
    es, scorer = ScriptedES(), FakeRerank()
    result = await searcher(es, scorer).search(bm25(window=10, rerank=3, source=["tag"]))
    assert [h.id for h in result.hits[:3]] == ["d2", "d1", "d0"]
    assert scorer.calls == [("q", [f"title {i}\nbody {i}" for i in range(3)])]
    # The caller asked for tag alone, and gets tag alone.
    assert all(h.source == {"tag": "t"} for h in result.hits)
    assert es.bodies[0]["_source"] == ["tag"]
    assert es.bodies[1] == text_body(
        [("docs", "d0"), ("docs", "d1"), ("docs", "d2")], TARGET.text_fields
    )


async def test_source_false_still_reranks_on_the_text() -> None:
    es, scorer = ScriptedES(), FakeRerank()
    result = await searcher(es, scorer).search(bm25(window=10, rerank=2, source=False))
    assert [h.id for h in result.hits[:2]] == ["d1", "d0"] and scorer.calls[0][1][
        0
    ] == "title 0\nbody 0"


def test_text_body_reads_exactly_those_hits_per_index() -> None:
    body = text_body([("a", "1"), ("b", "1"), ("a", "2")], ("title", "body"))
    assert body == {
        "query": {
            "bool": {
                "should": [
                    {
                        "bool": {
                            "filter": [{"term": {"_index": "a"}}, {"ids": {"values": ["1", "2"]}}]
                        }
                    },
                    {"bool": {"filter": [{"term": {"_index": "b"}}, {"ids": {"values": ["1"]}}]}},
                ],
                "minimum_should_match": 1,
            }
        },
        "size": 3,
        "_source": ["title", "body"],
    }


# -- plan and dev console -------------------------------------------------------------------


def test_plan_carries_the_rerank_stage() -> None:
    spec = SearchSpec(index="docs", query="q", mode="knn", rerank=50, k=5, from_=5)
    p = plan(spec, TARGET, [0.0] * 4)
    assert (p.rerank, p.text_fields, p.text_in_source, p.pages_here) == (
        50,
        ("title", "body"),
        True,
        True,
    )
    assert (p.requests[0].body["size"], p.requests[0].body["from"]) == (100, 0)
    assert plan(bm25(source=["tag"], rerank=5), TARGET, None).text_in_source is False
    plain = plan(bm25(), TARGET, None)
    assert (plain.rerank, plain.pages_here) == (None, False)


def test_dev_console_says_what_ran_in_the_sidecar() -> None:
    spec = SearchSpec(index="docs", query="q", rerank=50, k=10, from_=10)
    text = render(plan(spec, TARGET, [0.0] * 4), spec, "tiny-reranker")
    lines = text.splitlines()
    assert "# then reranked in the sidecar: top 50 by tiny-reranker" in lines
    assert lines.index("# then reranked in the sidecar: top 50 by tiny-reranker") > max(
        i for i, ln in enumerate(lines) if ln.startswith("GET ")
    )
    assert "hits [10, 20)" in text and "title, body" in text
    assert len(parse_dev_console(text)) == 2  # the comments do not disturb the requests
    assert "reranked" not in render(
        plan(SearchSpec(index="docs", query="q"), TARGET, [0.0] * 4),
        SearchSpec(index="docs", query="q"),
    )


# -- es-embed search --server URL --rerank N --------------------------------------------------


async def test_cli_reranks_with_the_sidecars_reranker() -> None:
    from aiohttp import web

    from es_embed.cli.search import _server_reranker
    from es_embed.config import ServerSettings, Settings

    seen: list[tuple[dict[str, Any], str | None]] = []

    async def models(request: web.Request) -> web.Response:
        data = [{"id": "emb", "dimensions": 8}, {"id": "rr", "task": "rerank"}]
        return web.json_response({"object": "list", "data": data})

    async def rerank(request: web.Request) -> web.Response:
        seen.append((await request.json(), request.headers.get("Authorization")))
        results = [{"index": 1, "relevance_score": 0.75}, {"index": 0, "relevance_score": 0.5}]
        return web.json_response({"results": results})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/rerank", rerank)
    settings = Settings(server=ServerSettings(api_keys=("k1",)))
    async with TestServer(app) as server:
        async with _server_reranker(settings, str(server.make_url("/"))) as stage:
            scores = await stage.score("q", ["a", "b"])
    assert stage.model == "rr" and list(scores) == [0.5, 0.75]  # back in document order
    body = {"model": "rr", "query": "q", "documents": ["a", "b"], "return_documents": False}
    assert seen == [(body, "Bearer k1")]


async def test_cli_refuses_a_sidecar_without_a_reranker_naming_rerank() -> None:
    from aiohttp import web

    from es_embed.cli.search import _server_reranker
    from es_embed.config import Settings

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "emb", "dimensions": 8}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    async with TestServer(app) as server:
        with pytest.raises(EmbedError) as info:
            async with _server_reranker(Settings(), str(server.make_url("/"))):
                pass
    assert info.value.param == "rerank" and "serves no reranker" in info.value.message


def test_cli_rerank_without_a_reranker_is_one_line_and_exit_2(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from es_embed.cli.search import main

    config = tmp_path / "es-embed.yaml"
    config.write_text("indices:\n  - name: docs\n    text_fields: [title]\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["search", "q", "--index", "docs", "--config", str(config), "--rerank", "5"]
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "reranker.name" in err
