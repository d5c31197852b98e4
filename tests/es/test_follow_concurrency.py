"""Rewrites racing the embedding never leave a vector of old text on newer text."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.es.follow_support import all_current, all_docs, followed_index, running, wait_until
from tests.fakes import FakeEncoder, GatedEncoder

pytestmark = pytest.mark.es


async def test_a_rewrite_during_embedding_wins_over_the_older_vector(es_url: str) -> None:
    encoder = GatedEncoder()
    async with followed_index(es_url, encoder=encoder) as env:
        follower = env.follower()
        async with running(follower):
            ops = []
            for i in range(20):
                ops += [{"index": {"_index": env.index, "_id": str(i)}}, {"text": f"old {i}"}]
            await env.es.bulk(operations=ops)
            assert await asyncio.to_thread(encoder.entered.wait, 10)
            # The old texts are being embedded right now; rewrite every one of them.
            ops = []
            for i in range(20):
                ops += [{"update": {"_index": env.index, "_id": str(i)}},
                        {"doc": {"text": f"new {i}"}}]  # fmt: skip
            await env.es.bulk(operations=ops)
            encoder.gate.set()
            await wait_until(lambda: all_current(env), what="new texts embedded")
        docs = await all_docs(env.es, env.index)
        assert {d["text"] for d in docs.values()} == {f"new {i}" for i in range(20)}
        assert follower.progress.conflicts == 20  # every stale write-back was refused


async def test_random_concurrent_rewrites_end_with_every_hash_current(es_url: str) -> None:
    rng = random.Random(7)
    encoder = FakeEncoder(seconds_per_token=0.0005)  # slow enough for writes to race it
    async with followed_index(es_url, encoder=encoder) as env, running(env.follower()):
        ids = [str(i) for i in range(60)]

        async def writer(seed: int) -> None:
            for round_ in range(15):
                chosen = rng.sample(ids, 10)
                ops = []
                for doc_id in chosen:
                    text = f"writer {seed} round {round_} doc {doc_id}"
                    if rng.random() < 0.5:
                        ops += [{"index": {"_index": env.index, "_id": doc_id}},
                                {"title": f"t{seed}", "text": text}]  # fmt: skip
                    else:
                        ops += [{"update": {"_index": env.index, "_id": doc_id,
                                            "retry_on_conflict": 5}},
                                {"doc": {"text": text}, "doc_as_upsert": True}]  # fmt: skip
                await env.es.bulk(operations=ops)
                await asyncio.sleep(rng.random() * 0.05)

        await asyncio.gather(*(writer(s) for s in range(3)))
        await wait_until(lambda: all_current(env), timeout=15, what="every hash current")
