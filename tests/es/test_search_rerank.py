"""``/v1/search`` with ``rerank`` on a real node and the tiny Qwen3 reranker: the top of the
fused list comes back in the order of the model card's own scores for each hit's text (the
follower's joined text fields), the rest in fused order; a source filter that leaves the
text out changes neither the order nor what the caller gets back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.errors import error_middleware
from es_embed.api.search import SEARCHER, make_searcher, post_search
from es_embed.config import (
    BatchSettings,
    IndexSettings,
    ModelSettings,
    RerankerSettings,
    Settings,
)
from es_embed.embed.protocol import Encoder
from es_embed.embed.rerank import load_reranker
from es_embed.embed.service import EmbeddingService
from es_embed.indices.document import document_text
from tests.es.search_support import BOTH, DOCS, corpus
from tests.model.qwen3_reranker_reference import reference_scores

pytestmark = [pytest.mark.es, pytest.mark.timeout(180)]
__all__ = ["corpus"]  # fixture
WINDOW = 6


@pytest.fixture
async def client(
    aes: Any, minilm_encoder: Encoder, tiny_qwen_reranker_dir: Path, corpus: IndexSettings
) -> AsyncIterator[TestClient[Any, Any]]:
    reranker = load_reranker(RerankerSettings(name=str(tiny_qwen_reranker_dir), device="cpu"))
    service = EmbeddingService(
        minilm_encoder, BatchSettings(), ModelSettings(name="minilm"), reranker=reranker
    )
    await service.start()
    app = web.Application(middlewares=[error_middleware])
    app[SEARCHER] = make_searcher(aes, service, Settings(indices=(corpus,)))
    app.router.add_post("/v1/search", post_search)
    try:
        async with TestClient(TestServer(app)) as c:
            yield c
    finally:
        await service.stop()


async def search(client: TestClient[Any, Any], **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/search", json=body)
    answer = await resp.json()
    assert resp.status == 200, answer
    return answer


@pytest.mark.parametrize("source", [None, ["topic"]])
async def test_top_of_the_fused_list_is_in_the_rerankers_order(
    client: TestClient[Any, Any],
    corpus: IndexSettings,
    tiny_qwen_reranker_dir: Path,
    source: list[str] | None,
) -> None:
    body: dict[str, Any] = {"index": corpus.name, "query": BOTH, "k": 12}
    if source is not None:
        body["source"] = source
    fused = [h["_id"] for h in (await search(client, **body))["hits"]]
    answer = await search(client, **body, rerank={"window": WINDOW})
    hits = answer["hits"]

    texts = [document_text(DOCS[i], corpus.text_fields) for i in fused[:WINDOW]]
    expected = reference_scores(
        tiny_qwen_reranker_dir, BOTH, texts, instruction=RerankerSettings().instruction
    )
    assert len(set(np.round(expected, 4))) == WINDOW  # distinct: the order is the model's
    order = [fused[i] for i in np.argsort(-expected, kind="stable")]
    assert [h["_id"] for h in hits[:WINDOW]] == order
    got = [h["legs"]["rerank"]["score"] for h in hits[:WINDOW]]
    np.testing.assert_allclose(got, np.sort(expected)[::-1], atol=1e-4)
    assert [h["legs"]["rerank"]["rank"] for h in hits[:WINDOW]] == list(range(1, WINDOW + 1))
    # Past the window: the fused order, no rerank leg; the fused legs kept everywhere.
    assert [h["_id"] for h in hits[WINDOW:]] == fused[WINDOW:]
    assert all("rerank" not in h["legs"] for h in hits[WINDOW:])
    assert all({"bm25", "knn"} & set(h["legs"]) for h in hits)
    assert answer["rerank_ms"] > 0
    if source is not None:  # the text was read apart; the caller gets what it asked for
        assert all(set(h["_source"]) == {"topic"} for h in hits)


async def test_bm25_alone_is_reranked_too_and_pages_after(
    client: TestClient[Any, Any], corpus: IndexSettings
) -> None:
    body = {"index": corpus.name, "query": BOTH, "mode": "bm25", "rerank": {"window": 4}}
    whole = [h["_id"] for h in (await search(client, **body, k=6))["hits"]]
    page2 = [h["_id"] for h in (await search(client, **body, k=3, **{"from": 3}))["hits"]]
    assert page2 == whole[3:6]
