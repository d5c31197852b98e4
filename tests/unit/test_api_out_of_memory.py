"""Out of memory degrades, through the real app: a batch the device refuses is split and
answered in full; only an input that cannot fit even alone is refused, with a 413. The same
for embeddings and reranker pairs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.api_support import api_client, error_of, make_settings
from tests.fakes import FakeEncoder, FakeReranker, OutOfMemoryEncoder, OutOfMemoryReranker
from tests.unit.test_api_ops import metric


def unit_vectors(texts: list[str]) -> np.ndarray:
    enc = FakeEncoder()
    return enc.forward(enc.tokenize(texts))


async def test_64_inputs_on_an_encoder_that_refuses_more_than_16_are_answered_in_full() -> None:
    enc = OutOfMemoryEncoder(most_inputs=16)
    texts = [f"document {i} about topic {i % 7}" for i in range(64)]
    # No time bound: the batches below are cut by the token budget alone, whatever the speed.
    settings = make_settings(batching={"max_bulk_batch_ms": 0})
    async with api_client(settings, enc) as c:
        resp = await c.post("/v1/embeddings", json={"input": texts})
        body = await resp.json()
        assert resp.status == 200, body
        got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
        assert [d["index"] for d in body["data"]] == list(range(64))
        np.testing.assert_allclose(got, unit_vectors(texts), rtol=0, atol=1e-6)
        text = await (await c.get("/metrics")).text()
        # 64 -> 32 + 32 -> four 16s: three halvings, and no model failure.
        assert metric(text, "es_embed_oom_splits_total") == 3
        assert metric(text, "es_embed_model_failures_total") == 0
        assert (await c.get("/health")).status == 200
        # The budget is now below what failed: the next 64 go in fitting batches at once.
        enc.attempts.clear()
        assert (await c.post("/v1/embeddings", json={"input": texts})).status == 200
        assert enc.attempts == [16, 16, 16, 16]
        text = await (await c.get("/metrics")).text()
        assert metric(text, "es_embed_oom_splits_total") == 3
        assert metric(text, "es_embed_batch_token_budget", lane="query") == 16 * 6


async def test_an_input_that_cannot_fit_alone_gets_413_naming_its_tokens() -> None:
    enc = OutOfMemoryEncoder(most_inputs=64, most_tokens=20)
    texts = ["short one", " ".join(["long"] * 30), "short two"]
    async with api_client(make_settings(), enc) as c:
        resp = await c.post("/v1/embeddings", json={"input": texts})
        error = await error_of(resp, 413)
        assert error["code"] == "input_too_large_for_memory" and error["param"] == "input[1]"
        assert "31 tokens" in error["message"]
        # Not a model failure: the service stays healthy and answers what fits.
        assert (await c.get("/health")).status == 200
        ok = await c.post("/v1/embeddings", json={"input": ["short one", "short two"]})
        assert ok.status == 200
        text = await (await c.get("/metrics")).text()
        assert metric(text, "es_embed_model_failures_total") == 0


async def test_rerank_pairs_degrade_the_same_way() -> None:
    reranker = OutOfMemoryReranker(most_inputs=4, most_tokens=40)
    query = "capital of france"
    documents = [f"city {i} is the capital of country {i}" for i in range(12)]
    async with api_client(make_settings(), reranker=reranker) as c:
        body = {"query": query, "documents": documents}
        resp = await c.post("/v1/rerank", json=body)
        answer = await resp.json()
        assert resp.status == 200, answer
        fake = FakeReranker()
        scores = fake.forward(fake.tokenize_pairs(query, documents))
        by_index = {r["index"]: r["relevance_score"] for r in answer["results"]}
        assert by_index == pytest.approx(dict(enumerate(scores.tolist())))
        text = await (await c.get("/metrics")).text()
        # 12 -> 6 + 6 -> four 3s: three halvings.
        assert metric(text, "es_embed_oom_splits_total") == 3
        # One pair longer than the device holds alone: 413 naming that document.
        body = {"query": query, "documents": ["short", " ".join(["long"] * 50)]}
        error = await error_of(await c.post("/v1/rerank", json=body), 413)
        assert error["param"] == "documents[1]" and "tokens" in error["message"]
        assert (await c.get("/health")).status == 200
