"""Writers rewriting the same documents while the follower embeds them (mid-backfill, three
shards): in the end every document's ``_embed.hash`` is the hash of its current text.

tests/es/test_follow_concurrency.py covers the single-page race deterministically; this is the
fault version: a back-fill under way, several writers, every kind of write (full index,
partial update, text cleared, delete and recreate) for several seconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.provision.setup import Setup
from tests.es.follow_support import followed_index, running
from tests.fakes import ANY_SHAPE, FakeEncoder
from tests.faults.support import (
    Expect,
    bulk_load,
    checkpoint_violations,
    count_embedded,
    hash_mismatches,
    search_all,
    wait_for,
)

pytestmark = [pytest.mark.es, pytest.mark.slow]

DOCS = 600
SHARDS = 3
WRITE_SECONDS = 4.0


async def writer(es: AsyncElasticsearch, index: str, seed: int, until: float) -> int:
    rng = random.Random(seed)
    writes = 0
    round_ = 0
    while time.monotonic() < until:
        round_ += 1
        ops: list[dict[str, Any]] = []
        for doc_id in rng.sample(range(DOCS), 20):
            text = f"writer {seed} round {round_} doc {doc_id} " + " ".join(
                rng.choice(("alpha", "beta", "gamma", "delta", "omega")) for _ in range(5)
            )
            kind = rng.random()
            if kind < 0.4:
                ops += [{"index": {"_index": index, "_id": str(doc_id)}},
                        {"title": f"t{seed}", "text": text}]  # fmt: skip
            elif kind < 0.8:
                ops += [{"update": {"_index": index, "_id": str(doc_id), "retry_on_conflict": 5}},
                        {"doc": {"text": text}, "doc_as_upsert": True}]  # fmt: skip
            elif kind < 0.9:  # text removed: the old vector must go too
                ops += [{"index": {"_index": index, "_id": str(doc_id)}}, {"title": "", "text": ""}]
            else:
                ops += [{"delete": {"_index": index, "_id": str(doc_id)}}]
        await es.bulk(operations=ops)
        writes += len(ops)
        await asyncio.sleep(rng.random() * 0.05)
    return writes


@pytest.mark.timeout(90)
async def test_rewrites_racing_the_backfill_leave_no_stale_vector(es_url: str) -> None:
    encoder = FakeEncoder(seconds_per_token=0.0003)
    async with followed_index(es_url, encoder=encoder, setup=False) as env:
        expect = Expect(model="fake-encoder", dims=32)
        await env.es.indices.create(index=env.index, settings={"number_of_shards": SHARDS})
        await Setup(env.es, env.settings, ANY_SHAPE).run()
        await bulk_load(env.es, env.index, DOCS, words=8)
        follower = env.follower()
        async with running(follower):

            async def under_way() -> bool:
                return await count_embedded(env.es, env.index) >= 64

            await wait_for(under_way, 30, "the back-fill under way")
            until = time.monotonic() + WRITE_SECONDS
            writes = await asyncio.gather(*(writer(env.es, env.index, s, until) for s in range(3)))

            async def all_current() -> bool:
                return await hash_mismatches(env.es, env.index, expect) == []

            await wait_for(all_current, 45, "every hash current after the writers stop", 0.5)
        hits = await search_all(env.es, env.index)
        for hit in hits:
            assert expect.is_current(hit["_source"]), hit
        assert (
            await checkpoint_violations(env.es, env.index, env.settings.follow.state_index, expect)
            == []
        )
        print(
            f"{sum(writes)} writes racing the back-fill; {follower.progress.conflicts} stale "
            f"write-backs refused; {follower.progress.cleared} vectors cleared; "
            f"{len(hits)} documents at the end, all current"
        )
        assert follower.progress.conflicts > 0  # the race did happen
