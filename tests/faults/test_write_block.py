"""A write block on a followed index (issue 14: "a temporary write block drops vectors for
good"): the follower holds its checkpoint while ``index.blocks.write`` refuses its
write-backs, and every document gets the vector of its current text once the block lifts.

Two kinds of documents meet the block: a page read and embedded just before it (the model is
held until the block is on, so its write-back is the first thing refused) and documents
written before the block but not yet read.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.follow.follower import Follower
from tests.es.follow_support import Env, all_docs, followed_index, running, stale_documents
from tests.fakes import HeldEncoder
from tests.faults.support import (
    Expect,
    bulk_docs,
    checkpoint_violations,
    hash_mismatches,
    stored_checkpoints,
    wait_for,
)

pytestmark = [pytest.mark.es, pytest.mark.slow]

BLOCK_SECONDS = 12.0


async def write(es: AsyncElasticsearch, index: str, ids: range, tag: str) -> tuple[int, int]:
    """Index documents; the lowest and highest ``_seq_no`` they got."""
    resp = await es.bulk(operations=bulk_docs(index, ids, words=6, tag=tag))
    assert not resp["errors"], resp
    seq_nos = [int(item["index"]["_seq_no"]) for item in resp["items"]]
    return min(seq_nos), max(seq_nos)


async def set_block(es: AsyncElasticsearch, index: str, on: bool) -> None:
    await es.indices.put_settings(index=index, settings={"index.blocks.write": on})


@pytest.mark.timeout(120)
async def test_a_write_block_holds_the_checkpoint_until_every_vector_is_written(
    es_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    encoder = HeldEncoder()
    follow = {"max_backoff": 1.0, "page_size": 32}
    async with followed_index(es_url, encoder=encoder, follow=follow) as env:
        es, index = env.es, env.index
        state = env.settings.follow.state_index
        expect = Expect(model="fake-encoder", dims=32)
        follower = env.follower()

        async def settled() -> bool:
            return not await hash_mismatches(es, index, expect)

        try:
            async with running(follower):
                await write(es, index, range(20), "before")
                await wait_for(settled, 15, "the first documents embedded")
                encoder.hold.set()
                first_held, _ = await write(es, index, range(20, 60), "read-then-blocked")
                assert await asyncio.to_thread(encoder.entered.wait, 10)
                _, last = await write(es, index, range(60, 100), "written-before-block")
                await set_block(es, index, True)
                encoder.hold.clear()
                encoder.release.set()  # the held page's write-back now meets the block

                with caplog.at_level(logging.WARNING, logger="es_embed.follow.follower"):
                    seen = await watch_during_block(env, follower, first_held, expect)
                unwritten = set(await hash_mismatches(es, index, expect))
                assert unwritten == {str(i) for i in range(20, 100)}
                assert follower.progress.failed == 0  # held, never given up
                refused = [r for r in caplog.records if "cluster_block_exception" in r.getMessage()]
                assert refused and all(r.levelno == logging.WARNING for r in refused)

                await set_block(es, index, False)
                await wait_for(settled, 30, "every document current after the block")

                async def checkpoint_passed_all() -> bool:
                    return min((await stored_checkpoints(es, state)).values()) >= last

                await wait_for(checkpoint_passed_all, 15, "the checkpoint past every document")
        finally:
            await set_block(es, index, False)
        assert await checkpoint_violations(es, index, state, expect) == []
        docs = await all_docs(es, index)
        assert len(docs) == 100 and stale_documents(env, docs) == []
        assert seen == sorted(seen) and len(seen) >= 5, seen


async def watch_during_block(
    env: Env, follower: Follower, first_held: int, expect: Expect
) -> list[int]:
    """Hold the block for BLOCK_SECONDS; every second, check that neither the in-memory nor
    the stored checkpoint passed the first refused document. The in-memory checkpoints seen."""
    state = env.settings.follow.state_index
    seen: list[int] = []
    started = time.monotonic()
    while time.monotonic() - started < BLOCK_SECONDS:
        in_memory = max(follower.checkpoints.values())
        stored = max((await stored_checkpoints(env.es, state)).values())
        assert in_memory < first_held and stored < first_held, (in_memory, stored, first_held)
        assert await checkpoint_violations(env.es, env.index, state, expect) == []
        seen.append(in_memory)
        await asyncio.sleep(1.0)
    return seen
