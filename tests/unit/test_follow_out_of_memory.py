"""A document too large for the device's memory even alone (issue 13) must not stall its
shard: the feed lists it as failed (the poison-document path of issue 14) and writes every
other document of the page; a batch that only needed splitting is answered in full."""

from __future__ import annotations

from typing import Any

import numpy as np

from es_embed.config import BatchSettings, ModelSettings, settings_from_dict
from es_embed.embed.service import EmbeddingService
from es_embed.follow.feed import Progress, ShardFeed
from es_embed.indices.resolve import resolve_index
from es_embed.metrics import Registry
from tests.fakes import FakeEncoder, OutOfMemoryEncoder, ScriptedBulk

DIMS = 32
MOST_TOKENS = 40  # padded tokens one pass may hold on the fake "GPU"


class Store:
    """The state index's failure records, in memory."""

    def __init__(self) -> None:
        self.failed: dict[str, str] = {}  # id -> reason

    async def record_failure(
        self, name: str, uuid: str, shard: int, hit: dict[str, Any], reason: str
    ) -> bool:
        new = self.failed.get(hit["_id"]) != reason
        self.failed[hit["_id"]] = reason
        return new

    async def clear_failures(self, uuid: str, shard: int, seq_nos: dict[str, int]) -> int:
        cleared = [doc_id for doc_id in seq_nos if self.failed.pop(doc_id, None) is not None]
        return len(cleared)


def hit(doc_id: str, seq_no: int, text: str) -> dict[str, Any]:
    return {"_index": "docs", "_id": doc_id, "_seq_no": seq_no, "_primary_term": 1,
            "_source": {"text": text}}  # fmt: skip


async def run_page(encoder: FakeEncoder, hits: list[dict[str, Any]]) -> tuple[Any, ...]:
    """One page through a feed on ``encoder``: (feed, store, bulk, registry, service health)."""
    settings = settings_from_dict({"indices": [{"name": "docs", "dims": DIMS}]})
    registry = Registry()
    service = EmbeddingService(encoder, BatchSettings(), ModelSettings(name="fake"), registry)
    target = resolve_index(settings.indices[0], service.info.shape)
    bulk, store = ScriptedBulk(), Store()
    es = bulk.client()
    feed = ShardFeed(es, service, target, store, index="docs", uuid="u", shard=0,  # type: ignore[arg-type]
                     page_size=len(hits), progress=Progress())  # fmt: skip
    await service.start()
    try:
        await feed._process(hits)
        healthy = service.health()
    finally:
        await service.stop()
        await es.close()
    return feed, store, bulk, registry, healthy


def expected_vector(text: str) -> list[float]:
    full = FakeEncoder().forward(FakeEncoder().tokenize([text]))[0][:DIMS]
    return list(full / np.linalg.norm(full))


async def test_a_document_too_large_for_memory_is_listed_and_the_page_goes_on() -> None:
    texts = {f"d{i}": f"short document number {i}" for i in range(6)}
    texts["huge"] = " ".join(f"word{i}" for i in range(60))  # 61 tokens: never fits alone
    hits = [hit(doc_id, seq, text) for seq, (doc_id, text) in enumerate(texts.items())]
    encoder = OutOfMemoryEncoder(most_inputs=64, most_tokens=MOST_TOKENS)

    feed, store, bulk, registry, healthy = await run_page(encoder, hits)

    assert list(store.failed) == ["huge"]
    reason = store.failed["huge"]
    assert reason.startswith("the model refused its text: input[0] has 61 tokens, more than the")
    assert "memory holds in one forward pass even alone" in reason
    assert feed.progress.failed == 1 and feed.progress.embedded == 6
    written = {doc_id for call in bulk.calls for doc_id in call}
    assert written == set(texts) - {"huge"}
    for doc_id in written:
        vector = bulk.sources[doc_id]["doc"]["embedding"]
        np.testing.assert_allclose(vector, expected_vector(texts[doc_id]), atol=1e-6)
    assert healthy == (True, None)  # a memory limit is not a model failure: no 503, no probe
    assert (registry.get_sample_value("es_embed_model_failures_total") or 0) == 0
    assert (registry.get_sample_value("es_embed_oom_splits_total") or 0) >= 1


async def test_a_page_that_only_needed_splitting_is_written_in_full() -> None:
    hits = [hit(f"d{i}", i, f"short document number {i}") for i in range(64)]
    encoder = OutOfMemoryEncoder(most_inputs=16)

    feed, store, bulk, registry, _ = await run_page(encoder, hits)

    assert store.failed == {} and feed.progress.failed == 0
    assert feed.progress.embedded == 64
    written = sorted(doc_id for call in bulk.calls for doc_id in call)
    assert written == sorted(h["_id"] for h in hits)
    assert max(encoder.batches) <= 16  # what ran fitted; the 64 were split, not refused
    assert (registry.get_sample_value("es_embed_oom_splits_total") or 0) >= 1
