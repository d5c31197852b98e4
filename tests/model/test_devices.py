"""The app as ``es-embed serve`` builds it with ``model.devices: [cpu, cpu]``: the tiny Qwen3
embedder and reranker loaded twice, each replica warmed up and named in the start-up log,
batches shared by both, and the answers those of one replica."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.app import create_app
from es_embed.api.keys import SERVICE
from es_embed.cli.serve import startup_summary
from es_embed.config import ModelSettings, RerankerSettings, settings_from_dict
from es_embed.embed.encoder import load_encoder
from es_embed.embed.rerank import load_reranker
from tests.unit.test_api_ops import metric

TEXTS = [f"document {i}: " + "a sentence of several words " * (1 + i % 4) for i in range(16)]
QUERY = "which document is longest?"


@pytest.mark.timeout(240)
async def test_two_cpu_replicas_share_batches_and_answer_as_one(
    tiny_qwen_dir: Path, tiny_qwen_reranker_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_from_dict(
        {
            "model": {"name": str(tiny_qwen_dir), "devices": ["cpu", "cpu"]},
            "reranker": {"name": str(tiny_qwen_reranker_dir)},
            "batching": {"max_batch_size": 2},
        }
    )
    caplog.set_level(logging.INFO, logger="es_embed")
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        ready = [r.getMessage() for r in caplog.records if "model ready" in r.getMessage()]
        assert [line.split(" (")[0] for line in ready] == [
            f"model ready: {tiny_qwen_dir.name} on cpu/0",
            f"model ready: {tiny_qwen_dir.name} on cpu/1",
        ]
        assert "dims, cpu/0, cpu/1, float32" in startup_summary(app, settings)
        assert app[SERVICE].devices == ["cpu/0", "cpu/1"]

        body = await post(client, "/v1/embeddings", {"input": TEXTS})
        served = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        scored = await post(client, "/v1/rerank", {"query": QUERY, "documents": TEXTS})
        text = await (await client.get("/metrics")).text()

    # At least 8 batches of documents and 8 of pairs (2 at most each): both replicas took some.
    batches = [metric(text, "es_embed_device_batches_total", device=d) for d in ("cpu/0", "cpu/1")]
    assert sum(batches) >= 16 and min(batches) > 0, batches
    # One replica alone, one text at a time: the same vectors and scores.
    alone = load_encoder(ModelSettings(name=str(tiny_qwen_dir), device="cpu"))
    expected = np.concatenate([alone.forward(alone.tokenize([t])) for t in TEXTS])
    np.testing.assert_allclose(served, expected, atol=1e-5)
    reranker = load_reranker(RerankerSettings(name=str(tiny_qwen_reranker_dir), device="cpu"))
    scores = np.concatenate([reranker.forward(reranker.tokenize_pairs(QUERY, [t])) for t in TEXTS])
    by_index = {r["index"]: r["relevance_score"] for r in scored["results"]}
    np.testing.assert_allclose([by_index[i] for i in range(len(TEXTS))], scores, atol=1e-4)


async def post(client: TestClient[Any, Any], path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post(path, json=body)
    answer: dict[str, Any] = await resp.json()
    assert resp.status == 200, answer
    return answer
