"""Per-shard checkpoints in the ``es-embed-state`` index: one document per index uuid + shard.

Keyed by the index *uuid*, not its name, so a deleted and recreated index (same name, new
uuid) starts over from -1 without anyone having to clean up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from es_embed.elastic.refusals import ALREADY_EXISTS, error_type

NO_CHECKPOINT = -1

STATE_INDEX_BODY: dict[str, Any] = {
    "settings": {"number_of_shards": 1, "auto_expand_replicas": "0-1"},
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "name": {"type": "keyword"},  # the configured index, alias or data stream
            "index": {"type": "keyword"},  # the concrete index
            "uuid": {"type": "keyword"},
            "shard": {"type": "integer"},
            "checkpoint": {"type": "long"},
            "updated_at": {"type": "date"},
        },
    },
}


def state_id(uuid: str, shard: int) -> str:
    return f"{uuid}:{shard}"


async def ensure_state_index(es: AsyncElasticsearch, name: str) -> bool:
    """Create the state index when missing; True when this call created it."""
    if await es.indices.exists(index=name):
        return False
    try:
        await es.indices.create(index=name, **STATE_INDEX_BODY)
    except ApiError as exc:
        if error_type(exc) == ALREADY_EXISTS:  # lost a race with another replica: fine
            return False
        raise
    return True


class CheckpointStore:
    def __init__(self, es: AsyncElasticsearch, index: str) -> None:
        self._es = es
        self._index = index

    async def load(self, uuid: str, shard: int) -> int:
        try:
            doc = await self._es.get(index=self._index, id=state_id(uuid, shard))
        except NotFoundError:  # no document, or no state index yet
            return NO_CHECKPOINT
        return int(doc["_source"].get("checkpoint", NO_CHECKPOINT))

    async def save(self, name: str, index: str, uuid: str, shard: int, checkpoint: int) -> None:
        await self._es.index(
            index=self._index,
            id=state_id(uuid, shard),
            document={
                "name": name,
                "index": index,
                "uuid": uuid,
                "shard": shard,
                "checkpoint": checkpoint,
                "updated_at": datetime.now(UTC).isoformat(),
            },
        )

    async def forget(self, uuid: str, shards: int) -> None:
        """Drop the checkpoints of a deleted index (best effort; they are harmless if left)."""
        for shard in range(shards):
            try:
                await self._es.delete(index=self._index, id=state_id(uuid, shard))
            except NotFoundError:
                pass
