"""``es-embed backfill --retry-failed``: the documents on record as failed, taken again.

Each is read by id at its current version and goes through the same page code as the feed
(hash, model, write-back under ``if_seq_no``), so one that passes now gets its vector and
loses its record, and one that still fails keeps its record with the new reason. A document
that is gone, or whose index is gone, loses its record: there is nothing left to embed.
"""

from __future__ import annotations

from collections import defaultdict

from elasticsearch import AsyncElasticsearch

from es_embed.config import FollowSettings
from es_embed.embed.service import EmbeddingService
from es_embed.follow.feed import Progress, ShardFeed
from es_embed.follow.follower import shard_positions
from es_embed.follow.state import CheckpointStore, FailedDocument, read_failures
from es_embed.indices.resolve import IndexTarget


async def retry_failed(
    es: AsyncElasticsearch,
    service: EmbeddingService,
    target: IndexTarget,
    follow: FollowSettings,
    progress: Progress,
) -> None:
    store = CheckpointStore(es, follow.state_index)
    await store.ensure()
    shards: dict[tuple[str, str, int], list[FailedDocument]] = defaultdict(list)
    for record in await read_failures(es, follow.state_index, [target.name]):
        shards[(record.index, record.uuid, record.shard)].append(record)
    progress.total = (progress.total or 0) + sum(map(len, shards.values()))
    live = {(p.index, p.uuid) for p in await shard_positions(es, target.name)}
    for (index, uuid, shard), records in shards.items():
        if (index, uuid) not in live:
            ids = [r.doc_id for r in records]
            progress.recovered += await store.drop_failures(uuid, shard, ids)
            continue
        feed = ShardFeed(es, service, target, store, index=index, uuid=uuid, shard=shard,
                         page_size=follow.page_size, progress=progress)  # fmt: skip
        for start in range(0, len(records), follow.page_size):
            await feed.retry(records[start : start + follow.page_size])
