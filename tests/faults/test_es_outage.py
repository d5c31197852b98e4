"""Elasticsearch gone for 10 s while the follower is mid-backfill.

The outage is a TCP proxy between the follower and the node that drops every connection
(``CountingProxy.cut``): stopping the shared node would take its data with it (the test
node's data directory is removed on stop) and restarting it costs more than the test's time
budget. To the follower a cut proxy is what a stopped node is: connections refused/reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.config import ElasticsearchSettings
from es_embed.elastic.client import build_client
from es_embed.follow.feed import PAGES_IN_FLIGHT
from es_embed.follow.follower import Follower
from es_embed.indices.resolve import resolve_index
from tests.es.follow_support import all_docs, followed_index, running, stale_documents
from tests.fakes import FakeEncoder
from tests.faults.support import (
    CountingProxy,
    Expect,
    bulk_load,
    checkpoint_violations,
    count_embedded,
    stored_checkpoints,
    wait_for,
)

pytestmark = [pytest.mark.es, pytest.mark.slow]

DOCS = 1500
PAGE = 64
OUTAGE = 10.0
MAX_BACKOFF = 2.0


@contextlib.asynccontextmanager
async def closing(es: AsyncElasticsearch) -> AsyncIterator[AsyncElasticsearch]:
    try:
        yield es
    finally:
        await es.close()


@pytest.mark.timeout(90)
async def test_follower_waits_out_an_outage_mid_backfill(es_url: str) -> None:
    url = urlsplit(es_url)
    proxy = CountingProxy(url.hostname or "127.0.0.1", url.port or 9200)
    await proxy.start()
    # ~10 tokens per document, 64 per page: a page takes ~0.2 s of "model" time.
    encoder = FakeEncoder(seconds_per_token=0.0003)
    follow = {"page_size": PAGE, "max_backoff": MAX_BACKOFF, "poll_interval": 0.1}
    try:
        async with followed_index(es_url, encoder=encoder, follow=follow) as env:
            expect = Expect(model="fake-encoder", dims=32, text_fields=("title", "text"))
            state = env.settings.follow.state_index
            await bulk_load(env.es, env.index, DOCS, words=6)
            # The production client (no retries of its own) through the proxy.
            via_proxy = build_client(ElasticsearchSettings(url=proxy.url, request_timeout=5))
            conf = env.settings.indices[0]
            follower = Follower(
                via_proxy,
                env.service,
                resolve_index(conf, env.service.info.shape),
                env.settings.follow,
            )
            async with closing(via_proxy), running(follower):

                async def under_way() -> bool:
                    return await count_embedded(env.es, env.index) >= 2 * PAGE

                await wait_for(under_way, 30, "the back-fill under way")
                proxy.cut()
                cut_at = time.monotonic()
                written_at_cut = await count_embedded(env.es, env.index)
                assert written_at_cut < DOCS, "the back-fill finished before the outage"
                cpu_before = time.process_time()
                seen: list[int] = []
                while time.monotonic() - cut_at < OUTAGE:
                    seen.append(min(follower.checkpoints.values(), default=-1))
                    await asyncio.sleep(0.5)
                cpu = time.process_time() - cpu_before
                refused = proxy.refused
                # What was stored before the outage covers only written documents.
                stored = await stored_checkpoints(env.es, state)
                assert await checkpoint_violations(env.es, env.index, state, expect) == []
                assert follower.progress.embedded < DOCS
                proxy.restore()

                async def all_current() -> bool:
                    return not stale_documents(env, await all_docs(env.es, env.index))

                await wait_for(all_current, 45, "every document current after the outage", 0.5)
            report = (
                f"outage {OUTAGE:g} s at {written_at_cut}/{DOCS} written: "
                f"{refused} connection attempts refused, {cpu:.2f} s CPU in the test process; "
                f"encoded {encoder.encoded_inputs} inputs for {DOCS} documents"
            )
            print(report)
            # Backed off: a busy loop would make thousands of attempts in 10 s. With backoff
            # capped at 2 s, the supervisor and the shard feed retry ~10 times each.
            assert 2 <= refused <= 60, report
            assert cpu < OUTAGE / 2, report
            # The feed's checkpoint never went backwards while it waited.
            assert seen == sorted(seen), seen
            # Resumed from the checkpoint: only pages in flight at the cut were embedded again.
            assert encoder.encoded_inputs <= DOCS + PAGES_IN_FLIGHT * PAGE, report
            after = await stored_checkpoints(env.es, state)
            assert all(after[k] >= v for k, v in stored.items()), (stored, after)
            assert stale_documents(env, await all_docs(env.es, env.index)) == []
    finally:
        await proxy.close()
