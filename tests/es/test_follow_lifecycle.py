"""Restart, recreation, outages: the follower resumes where it was and never loses a write."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest

from tests.es.follow_support import (
    TcpProxy,
    all_current,
    all_docs,
    followed_index,
    running,
    stale_documents,
    wait_until,
)

pytestmark = pytest.mark.es


def docs_ops(index: str, ids: range, text: str = "text") -> list[dict]:
    return [
        op
        for i in ids
        for op in (
            {"index": {"_index": index, "_id": str(i)}},
            {"title": f"doc {i}", "text": f"{text} {i}"},
        )
    ]


async def global_checkpoint(env) -> int:  # type: ignore[no-untyped-def]
    stats = await env.es.indices.stats(index=env.index, level="shards", metric="docs")
    copies = stats["indices"][env.index]["shards"]["0"]
    return next(c["seq_no"]["global_checkpoint"] for c in copies if c["routing"]["primary"])


async def test_a_restarted_follower_resumes_from_its_checkpoint(es_url: str) -> None:
    async with followed_index(es_url) as env:
        await env.es.bulk(operations=docs_ops(env.index, range(100)))
        first = env.follower()
        async with running(first):
            await wait_until(lambda: all_current(env), what="first 100 embedded")

            async def settled() -> bool:  # our own write-backs read back as well
                gcp = await global_checkpoint(env)
                return list(first.checkpoints.values()) == [gcp]

            await wait_until(settled, what="checkpoint at the global checkpoint")
        assert env.encoder.encoded_inputs == 100
        saved = list(first.checkpoints.values())[0]

        # While nobody follows: 10 new documents and 5 rewritten ones.
        await env.es.bulk(operations=docs_ops(env.index, range(100, 110)))
        await env.es.bulk(operations=docs_ops(env.index, range(0, 5), text="rewritten"))

        second = env.follower()
        async with running(second):
            await wait_until(lambda: all_current(env), what="changes while stopped embedded")
        assert env.encoder.encoded_inputs == 115  # the 95 unchanged were not embedded again
        assert second.progress.embedded == 15
        assert min(second.checkpoints.values()) > saved


async def test_a_deleted_and_recreated_index_starts_over(es_url: str) -> None:
    async with followed_index(es_url) as env:
        follower = env.follower()
        async with running(follower):
            await env.es.bulk(operations=docs_ops(env.index, range(20)))
            await wait_until(lambda: all_current(env), what="first generation")
            old_uuid = await index_uuid(env)
            await env.es.indices.delete(index=env.index)
            # Recreated by a plain write: setup's index template brings the mapping back.
            await env.es.bulk(operations=docs_ops(env.index, range(5), text="second life"))
            await wait_until(lambda: all_current(env), what="second generation")
            assert len(await all_docs(env.es, env.index)) == 5
            mapping = await env.es.indices.get_mapping(index=env.index)
            props = mapping[env.index]["mappings"]["properties"]
            assert props["embedding"]["type"] == "dense_vector"
        new_uuid = await index_uuid(env)
        assert new_uuid != old_uuid
        assert env.encoder.encoded_inputs == 25
        # Checkpoints are keyed by uuid; the deleted index's were dropped.
        state = env.settings.follow.state_index
        await env.es.indices.refresh(index=state)
        hits = (await env.es.search(index=state, size=10))["hits"]["hits"]
        assert {h["_source"]["uuid"] for h in hits} == {new_uuid}


async def index_uuid(env) -> str:  # type: ignore[no-untyped-def]
    got = await env.es.indices.get(index=env.index)
    return str(got[env.index]["settings"]["index"]["uuid"])


async def test_a_failing_encoder_pauses_the_feed_without_losing_documents(es_url: str) -> None:
    async with followed_index(es_url, follow={"max_backoff": 1.0}) as env:
        follower = env.follower()
        async with running(follower):
            await env.es.bulk(operations=docs_ops(env.index, range(3)))
            await wait_until(lambda: all_current(env), what="before the failure")
            env.encoder.failure = RuntimeError("GPU fell off the bus")
            resp = await env.es.bulk(operations=docs_ops(env.index, range(3, 10)))
            first_new = min(item["index"]["_seq_no"] for item in resp["items"])
            await wait_until(lambda: _has_attempted(env), what="the follower tried and failed")
            await asyncio.sleep(0.5)
            # Nothing skipped past: the checkpoint stays before the unembedded writes.
            assert max(follower.checkpoints.values()) < first_new
            env.encoder.failure = None
            await wait_until(lambda: all_current(env), timeout=10, what="after recovery")
        assert stale_documents(env, await all_docs(env.es, env.index)) == []


async def _has_attempted(env) -> bool:  # type: ignore[no-untyped-def]
    healthy, _ = env.service.health()
    return not healthy


async def test_an_elasticsearch_outage_is_waited_out(es_url: str) -> None:
    host = urlsplit(es_url)
    proxy = TcpProxy(host.hostname or "127.0.0.1", host.port or 9200)
    await proxy.start()
    try:
        async with followed_index(
            es_url, follow={"max_backoff": 0.5}, es_url_for_follower=proxy.url
        ) as env:
            async with running(env.follower()):
                await env.es.bulk(operations=docs_ops(env.index, range(5)))
                await wait_until(lambda: all_current(env), what="before the outage")
                await proxy.cut()
                await env.es.bulk(operations=docs_ops(env.index, range(5, 15)))
                await asyncio.sleep(1.5)  # several failed polls: retried, not crashed
                assert stale_documents(env, await all_docs(env.es, env.index))
                await proxy.start()
                await wait_until(lambda: all_current(env), what="after the outage")
    finally:
        await proxy.cut()
