"""Rerank on a passages index, on a real node with MiniLM and the tiny Qwen3 reranker: the
text the reranker scores for a long manual is its passage holding the matched fact (title,
newline, passage), whether the hit came with that passage from the kNN leg (hybrid) or not
(bm25: the sidecar asks the node for the passage the kNN would pick); ``--dev-console``
says that part ran in the sidecar."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from elasticsearch import AsyncElasticsearch

from es_embed.cli import search as cli
from es_embed.config import BatchSettings, ModelSettings, RerankerSettings, Settings
from es_embed.embed.protocol import Encoder
from es_embed.embed.rerank import load_reranker
from es_embed.embed.service import EmbeddingService
from es_embed.indices.document import document_text
from es_embed.search import rerank
from es_embed.search.execute import Searcher
from es_embed.search.rerank import RerankStage
from es_embed.search.spec import SearchSpec
from tests.es.search_support import service
from tests.es.test_passages_acceptance import (
    FACT,
    QUESTION,
    cleanup,
    cli_search,
    load,
    long_manual,
    other_documents,
)
from tests.model.qwen3_reranker_reference import reference_scores

pytestmark = [pytest.mark.es, pytest.mark.timeout(300)]
__all__ = ["cleanup", "service"]  # fixtures
TITLE = "Dishwasher manual"
WINDOW = 10


class Recorded:
    """The service's reranker as the search's stage, remembering the texts it was given."""

    def __init__(self, service: EmbeddingService) -> None:
        self.service = service
        self.texts: list[str] = []

    async def __call__(self, query: str, documents: Sequence[str]) -> np.ndarray:
        self.texts = list(documents)
        return (await self.service.rerank(query, documents)).scores


@pytest.fixture
async def reranking(
    minilm_encoder: Encoder, tiny_qwen_reranker_dir: Path
) -> AsyncIterator[EmbeddingService]:
    reranker = load_reranker(RerankerSettings(name=str(tiny_qwen_reranker_dir), device="cpu"))
    svc = EmbeddingService(
        minilm_encoder, BatchSettings(), ModelSettings(name="minilm"), reranker=reranker
    )
    await svc.start()
    yield svc
    await svc.stop()


async def test_the_reranker_scores_the_passage_holding_the_fact(
    aes: AsyncElasticsearch,
    es_url: str,
    service: EmbeddingService,
    reranking: EmbeddingService,
    minilm_encoder: Encoder,
    tiny_qwen_reranker_dir: Path,
    tmp_path: Path,
    cleanup: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text, _ = long_manual(minilm_encoder, after_tokens=900, total_tokens=1800)
    rows = [{"_id": "manual", "title": TITLE, "text": text}]
    rows += [{"_id": f"other-{i}", **doc} for i, doc in enumerate(other_documents())]
    target = await load(aes, service, tmp_path, rows, passages={"max_tokens": 64})
    recorded = Recorded(reranking)
    searcher = Searcher(aes, reranking.embed_query, [target],
                        rerank=RerankStage("tiny", recorded))  # fmt: skip

    # hybrid: the manual comes with the kNN leg's best passage, which holds the fact.
    spec = SearchSpec(index=target.name, query=QUESTION, k=WINDOW, rerank=WINDOW)
    hybrid = await searcher.search(spec)
    manual = next(h for h in hybrid.hits if h.id == "manual")
    assert manual.passages and FACT in (manual.passages[0].text or "")
    expected = f"{TITLE}\n{manual.passages[0].text}"
    assert expected in recorded.texts
    scores = reference_scores(tiny_qwen_reranker_dir, QUESTION, [expected, f"{TITLE}\n{text}"],
                              instruction=RerankerSettings().instruction)  # fmt: skip
    assert manual.legs["rerank"].score == pytest.approx(float(scores[0]), abs=1e-4)
    # Not the score of the document read from its start (what a one-vector index reads).
    assert abs(scores[0] - scores[1]) > 1e-3

    # bm25 alone: no passages come with the hits; the sidecar asks for the one kNN would pick.
    bm25 = await searcher.search(
        SearchSpec(index=target.name, query=QUESTION, mode="bm25", k=WINDOW, rerank=WINDOW)
    )
    manual = next(h for h in bm25.hits if h.id == "manual")
    assert manual.passages is None and expected in recorded.texts
    assert manual.legs["rerank"].score == pytest.approx(float(scores[0]), abs=1e-4)

    await restricted_search_finds_every_document(aes, target.name, reranking, rows)
    await dev_console_says_so(target.name, es_url, tmp_path, tiny_qwen_reranker_dir,
                              minilm_encoder, monkeypatch)  # fmt: skip


async def restricted_search_finds_every_document(
    aes: AsyncElasticsearch, index: str, svc: EmbeddingService, rows: list[dict[str, Any]]
) -> None:
    """The nested kNN filtered to N documents with k = N returns each of them once."""
    vector = (await svc.embed_query(QUESTION)).tolist()
    keys = [(index, str(r["_id"])) for r in rows]
    body = rerank.best_passage_body(keys, "embedding", vector, ("title", "text"))
    hits = (await aes.search(index=index, body=body))["hits"]["hits"]
    found = rerank.best_passages(hits, "embedding", ("title", "text"))
    assert sorted(found) == sorted(keys)
    passage, source = found[(index, "manual")]
    assert (
        passage is not None
        and FACT in document_text(source, ("title", "text"))[passage.start : passage.end]
    )


async def dev_console_says_so(
    index: str,
    es_url: str,
    tmp_path: Path,
    reranker_dir: Path,
    encoder: Encoder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reranker = load_reranker(RerankerSettings(name=str(reranker_dir), device="cpu"))

    @contextlib.asynccontextmanager
    async def with_reranker(
        settings: Settings, *, with_reranker: bool = False
    ) -> AsyncIterator[EmbeddingService]:
        svc = EmbeddingService(encoder, BatchSettings(), ModelSettings(), reranker=reranker)
        await svc.start()
        try:
            yield svc
        finally:
            await svc.stop()

    monkeypatch.setattr(cli, "embedding_service", with_reranker)
    config = tmp_path / "es-embed-rerank.yaml"
    config.write_text(yaml.safe_dump({
        "elasticsearch": {"url": es_url}, "reranker": {"name": str(reranker_dir)},
        "indices": [{"name": index, "passages": {"max_tokens": 64}}],
    }))  # fmt: skip
    argv = ["search", QUESTION, "--index", index, "--config", str(config), "--rerank", "5"]
    code, out = await asyncio.to_thread(cli_search, [*argv, "--dev-console"])
    assert code == 0, out
    lines = out.splitlines()
    ran = next(i for i, ln in enumerate(lines) if ln.startswith("# then reranked in the sidecar"))
    assert ran > max(i for i, ln in enumerate(lines) if ln.startswith("GET "))
    assert "best passage" in out and "knn on embedding.vector" in out
