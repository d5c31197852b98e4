"""Issue acceptance: 1,000 SciFact documents written by the plain client while following."""

from __future__ import annotations

import pytest

from devtools.datasets import first_jsonl, shared_data_dir
from tests.es.follow_support import (
    DIMS,
    all_docs,
    followed_index,
    running,
    stale_documents,
    wait_until,
)

pytestmark = pytest.mark.es

SCIFACT = shared_data_dir() / "scifact" / "corpus.jsonl"


def first_docs(n: int) -> list[dict]:
    if not SCIFACT.exists():
        pytest.skip(f"SciFact corpus not found at {SCIFACT} (set ES_EMBED_DATA_DIR)")
    return first_jsonl(SCIFACT, n)


def bulk_ops(index: str, docs: list[dict]) -> list[dict]:
    return [
        op
        for d in docs
        for op in (
            {"index": {"_index": index, "_id": d["_id"]}},
            {"title": d["title"], "text": d["text"]},
        )  # fmt: skip
    ]


async def test_1000_scifact_documents_then_100_rewrites(es_url: str) -> None:
    corpus = first_docs(1000)
    async with followed_index(es_url, follow={"page_size": 256}) as env:
        async with running(env.follower()):
            for start in range(0, len(corpus), 250):
                await env.es.bulk(operations=bulk_ops(env.index, corpus[start : start + 250]))

            async def all_embedded() -> bool:
                docs = await all_docs(env.es, env.index)
                return len(docs) == 1000 and not stale_documents(env, docs)

            # A liveness bound, not a speed check (bench/ingest.py measures speed): generous, so a
            # loaded shared machine does not fail it.
            await wait_until(all_embedded, timeout=200, what="1,000 documents embedded")
            before = await all_docs(env.es, env.index)
            assert all(len(d["embedding"]) == DIMS for d in before.values())
            assert all(d["_embed"]["dims"] == DIMS for d in before.values())
            calls = env.encoder.encoded_inputs
            assert calls == 1000

            # Change the title: it comes first, so it survives truncation of long abstracts.
            rewritten = {d["_id"] for d in corpus[::10]}
            ops = []
            for doc_id in sorted(rewritten):
                ops += [{"update": {"_index": env.index, "_id": doc_id}},
                        {"doc": {"title": "Revised: " + before[doc_id]["title"]}}]  # fmt: skip
            await env.es.bulk(operations=ops)

            async def rewrites_embedded() -> bool:
                docs = await all_docs(env.es, env.index)
                return not stale_documents(env, docs)

            await wait_until(rewrites_embedded, timeout=60, what="100 rewrites embedded")
        after = await all_docs(env.es, env.index)
        changed = {i for i in after if after[i]["embedding"] != before[i]["embedding"]}
        assert changed == rewritten
        assert env.encoder.encoded_inputs - calls == 100  # never the other 900
