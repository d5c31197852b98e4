"""Where each shard behind a followed name stands: one ``_stats`` call (it resolves aliases
and data streams to their concrete indices and gives every primary's global checkpoint,
index uuid and shard number)."""

from __future__ import annotations

from dataclasses import dataclass

from elasticsearch import AsyncElasticsearch, NotFoundError

STATS_FILTER = [
    "indices.*.uuid",
    "indices.*.shards.*.routing.primary",
    "indices.*.shards.*.seq_no.global_checkpoint",
]


@dataclass(frozen=True)
class ShardPosition:
    index: str  # concrete index
    uuid: str
    shard: int
    global_checkpoint: int


async def shard_positions(es: AsyncElasticsearch, name: str) -> list[ShardPosition]:
    """Every primary shard behind ``name``; [] when nothing by that name exists (yet)."""
    try:
        resp = await es.indices.stats(
            index=name, metric="docs", level="shards", filter_path=STATS_FILTER
        )
    except NotFoundError:
        return []
    out = []
    for index, stats in (resp.get("indices") or {}).items():
        for shard, copies in (stats.get("shards") or {}).items():
            for copy in copies:
                if copy.get("routing", {}).get("primary"):
                    gcp = int(copy.get("seq_no", {}).get("global_checkpoint", -1))
                    out.append(ShardPosition(index, stats["uuid"], int(shard), gcp))
    return sorted(out, key=lambda p: (p.index, p.shard))
