"""A write block on a followed index (issue 14: "a temporary write block drops vectors for
good"): the follower holds its checkpoint while ``index.blocks.write`` refuses its
write-backs, and every document gets the vector of its current text once the block lifts.

Two kinds of documents meet the block: a page read and embedded just before it (the model is
held until the block is on, so its write-back is the first thing refused) and documents
written before the block but not yet read.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.embed.protocol import Tokenized
from tests.es.follow_support import all_docs, followed_index, running, stale_documents
from tests.fakes import FakeEncoder
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


class HeldEncoder(FakeEncoder):
    """While ``hold`` is set, forward() signals ``entered`` and waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if self.hold.is_set():
            self.entered.set()
            self.release.wait(30)
        return super().forward(batch)


async def write(es: AsyncElasticsearch, index: str, ids: range, tag: str) -> int:
    """Index documents; the lowest ``_seq_no`` they got."""
    resp = await es.bulk(operations=bulk_docs(index, ids, words=6, tag=tag))
    assert not resp["errors"], resp
    return min(int(item["index"]["_seq_no"]) for item in resp["items"])


async def set_block(es: AsyncElasticsearch, index: str, on: bool) -> None:
    await es.indices.put_settings(index=index, settings={"index.blocks.write": on})


@pytest.mark.timeout(120)
async def test_a_write_block_holds_the_checkpoint_until_every_vector_is_written(
    es_url: str,
) -> None:
    encoder = HeldEncoder()
    follow = {"max_backoff": 1.0, "page_size": 32}
    async with followed_index(es_url, encoder=encoder, follow=follow) as env:
        es, index = env.es, env.index
        state = env.settings.follow.state_index
        expect = Expect(model="fake-encoder", dims=32)
        follower = env.follower()
        try:
            async with running(follower):
                await write(es, index, range(20), "before")

                async def settled() -> bool:
                    return not await hash_mismatches(es, index, expect)

                await wait_for(settled, 15, "the first documents embedded")
                encoder.hold.set()
                first_held = await write(es, index, range(20, 60), "read-then-blocked")
                assert await asyncio.to_thread(encoder.entered.wait, 10)
                await write(es, index, range(60, 100), "written-before-block")
                await set_block(es, index, True)
                encoder.hold.clear()
                encoder.release.set()  # the held page's write-back now meets the block

                seen = await watch_during_block(env, follower, first_held, expect)
                assert await hash_mismatches(es, index, expect) == [str(i) for i in range(20, 100)]
                assert follower.progress.failed == 0  # held, never given up

                await set_block(es, index, False)
                await wait_for(settled, 30, "every document current after the block")
                stored = await stored_checkpoints(es, state)
                top = (await es.count(index=index))["count"]

                async def checkpoint_caught_up() -> bool:
                    return max((await stored_checkpoints(es, state)).values()) >= first_held + 79

                await wait_for(checkpoint_caught_up, 15, "the checkpoint past every document")
        finally:
            await set_block(es, index, False)
        assert top == 100 and stored
        assert await checkpoint_violations(es, index, state, expect) == []
        assert stale_documents(env, await all_docs(es, index)) == []
        assert seen == sorted(seen) and len(seen) >= 5, seen


async def watch_during_block(env: Any, follower: Any, first_held: int, expect: Expect) -> list[int]:
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
