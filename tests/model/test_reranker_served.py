"""The app as ``es-embed serve`` builds it, loading both tiny models from the settings:
/v1/rerank answers with the model card's scores, best first; the reranker is listed under
its directory's name (never its path); the start-up log names the family detected."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.app import create_app
from es_embed.cli.serve import startup_summary
from es_embed.config import settings_from_dict
from tests.model.qwen3_reranker_reference import reference_scores

QUERY = "Where do vaccines train the immune system?"
DOCUMENTS = [
    "Vaccines train the immune system to recognise a virus before infection.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Numbers like 42, 3.14 and 2025 appear in scientific abstracts.",
]


@pytest.mark.timeout(180)
async def test_serve_loads_the_reranker_and_ranks_by_the_model_card(
    tiny_qwen_dir: Path, tiny_qwen_reranker_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_from_dict(
        {
            "model": {"name": str(tiny_qwen_dir), "device": "cpu"},
            "reranker": {"name": str(tiny_qwen_reranker_dir), "device": "cpu"},
        }
    )
    app = create_app(settings)
    with caplog.at_level(logging.INFO, logger="es_embed"):
        async with TestClient(TestServer(app)) as client:
            resp = await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
            text = await resp.text()
            body = await resp.json()
            models = (await (await client.get("/v1/models")).json())["data"]
            summary = startup_summary(app, settings)
    assert resp.status == 200, body
    served = tiny_qwen_reranker_dir.name
    assert body["model"] == served and str(tiny_qwen_reranker_dir.parent) not in text
    expected = reference_scores(tiny_qwen_reranker_dir, QUERY, DOCUMENTS)
    order = [int(i) for i in np.argsort(-expected, kind="stable")]
    assert [r["index"] for r in body["results"]] == order
    got = [r["relevance_score"] for r in body["results"]]
    np.testing.assert_allclose(got, expected[order], atol=1e-4)
    assert [m["id"] for m in models] == [tiny_qwen_dir.name, served]
    assert f"reranker {served} (qwen3 family" in summary
    assert any("qwen3 family" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(180)
async def test_a_pair_over_max_length_is_cut_scored_as_cut_and_counted_in_usage(
    tiny_qwen_dir: Path, tiny_qwen_reranker_dir: Path
) -> None:
    """As /v1/embeddings reports inputs cut to model.max_length, /v1/rerank reports pairs
    cut to reranker.max_length, and scores what was kept, as the model card's code does."""
    max_length = 200
    settings = settings_from_dict(
        {
            "model": {"name": str(tiny_qwen_dir), "device": "cpu"},
            "reranker": {
                "name": str(tiny_qwen_reranker_dir),
                "device": "cpu",
                "max_length": max_length,
            },
        }
    )
    documents = [" ".join(DOCUMENTS * 20), DOCUMENTS[0]]
    async with TestClient(TestServer(create_app(settings))) as client:
        resp = await client.post("/v1/rerank", json={"query": QUERY, "documents": documents})
        body = await resp.json()
    assert resp.status == 200, body
    assert body["usage"]["truncated_inputs"] == 1
    assert max_length < body["usage"]["total_tokens"] < 2 * max_length
    expected = reference_scores(tiny_qwen_reranker_dir, QUERY, documents, max_length=max_length)
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([got[0], got[1]], expected, atol=1e-4)
    whole = reference_scores(tiny_qwen_reranker_dir, QUERY, documents[:1])  # not cut
    assert abs(float(whole[0]) - got[0]) > 1e-3
