"""``es-embed status --config FILE [--index NAME] [--json]``: where each feed stands.

Per configured index and shard: the stored checkpoint, the lag (global checkpoint minus
checkpoint, in operations), the replica holding its lease and how long ago that lease was
renewed; then the documents on record as failed, with their reasons.
Read-only: it creates nothing, needs no model, and works while ``serve`` runs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from elasticsearch import AsyncElasticsearch

from es_embed.cli.runtime import add_config_options, es_client, run_with_settings
from es_embed.config import ConfigError, Settings
from es_embed.follow.follower import shard_positions
from es_embed.follow.leases import read_leases
from es_embed.follow.state import FailedDocument, read_checkpoints, read_failures

SUMMARY = "checkpoint and lag of every followed shard, and the failed documents"
DESCRIPTION = (
    "Print, per configured index and shard, the stored checkpoint, the lag behind the "
    "global checkpoint and the replica holding its lease (with the lease's age), then the "
    "documents the follower could not embed (retry them with "
    "`es-embed backfill --retry-failed`)."
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help=SUMMARY, description=DESCRIPTION)
    add_config_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object instead of tables")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    return run_with_settings(args, lambda settings: _run(settings, args.index, args.json))


@dataclass(frozen=True)
class ShardRow:
    name: str  # configured index, alias or data stream
    index: str  # concrete index ("" when nothing by that name exists yet)
    shard: int
    checkpoint: int
    global_checkpoint: int
    owner: str | None = None  # the replica whose lease is live; None: nobody follows it now
    lease_age: float | None = None  # seconds since the lease was last renewed

    @property
    def lag(self) -> int:
        return max(0, self.global_checkpoint - self.checkpoint)


async def _run(settings: Settings, names: list[str] | None, as_json: bool) -> int:
    confs = [settings.index(n) for n in names] if names else list(settings.indices)
    if not confs:
        raise ConfigError("indices: nothing to report; add at least one index to the config")
    state = settings.follow.state_index
    async with es_client(settings) as es:
        rows = [row for conf in confs for row in await shard_rows(es, state, conf.name)]
        failed = await read_failures(es, state, [c.name for c in confs])
    lines = [json.dumps(report(rows, failed), indent=2)] if as_json else render(rows, failed)
    print("\n".join(lines))
    return 0


async def shard_rows(es: AsyncElasticsearch, state: str, name: str) -> list[ShardRow]:
    positions = await shard_positions(es, name)
    if not positions:
        return [ShardRow(name, "", 0, -1, -1)]
    keys = [(p.uuid, p.shard) for p in positions]
    stored = await read_checkpoints(es, state, keys)
    leases = await read_leases(es, state, keys)
    return [
        ShardRow(
            name,
            p.index,
            p.shard,
            stored[key],
            p.global_checkpoint,
            leases[key].owner,
            leases[key].age,
        )  # fmt: skip
        for p, key in zip(positions, keys, strict=True)
    ]


def report(rows: list[ShardRow], failed: list[FailedDocument]) -> dict[str, Any]:
    return {
        "shards": [{**asdict(r), "lag": r.lag} for r in rows if r.index],
        "missing": [r.name for r in rows if not r.index],
        "failed": [asdict(f) for f in failed],
    }


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is never padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]])
        for r in [header, *rows]
    ]


def render(rows: list[ShardRow], failed: list[FailedDocument]) -> list[str]:
    shards = [
        (
            _where(r.name, r.index),
            str(r.shard),
            str(r.checkpoint),
            str(r.lag),
            r.owner or "-",
            "-" if r.lease_age is None else f"{r.lease_age:.1f}s",
        )  # fmt: skip
        for r in rows
        if r.index
    ]
    header = ("INDEX", "SHARD", "CHECKPOINT", "LAG", "OWNER", "LEASE AGE")
    lines = table(header, shards) if shards else []
    lines += [f"{r.name}: no such index, alias or data stream (yet)" for r in rows if not r.index]
    if not failed:
        return [*lines, "", "no failed documents"]
    lines += ["", f"{len(failed)} failed document{'s' if len(failed) != 1 else ''}:"]
    return lines + table(
        ("INDEX", "ID", "TIME", "REASON"),
        [(_where(f.name, f.index), f.doc_id, f.failed_at, _one_line(f.reason)) for f in failed],
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _where(name: str, index: str) -> str:
    return name if index == name else f"{name} ({index})"
