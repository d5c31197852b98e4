"""``es-embed backfill --config FILE [--index NAME] [--retry-failed]``: run the feed up to
now, then exit.

The same feed as ``es-embed serve`` (same checkpoints), so a backfill that is stopped or
killed resumes where it was, and ``serve`` afterwards only sees newer writes. Unlike
``serve``, which waits out any outage, a backfill gives up once Elasticsearch (or anything
else) has failed for ``follow.give_up_seconds`` in a row: exit 1, one line naming the URL.
Documents it cannot embed are skipped and listed as failed (``es-embed status``); the exit
code is then 1. ``--retry-failed`` instead takes only those documents again, at their
current version.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

from elasticsearch import AsyncElasticsearch

from es_embed.cli.progress import ProgressLine
from es_embed.cli.runtime import es_client, run_command, settings_or_report
from es_embed.config import ConfigError, Settings
from es_embed.embed.service import EmbeddingService
from es_embed.embed.startup import embedding_service
from es_embed.follow.follower import Follower
from es_embed.follow.retry import retry_failed
from es_embed.indices.resolve import resolve_index


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "backfill",
        help="embed every document whose vector is missing or stale, then exit",
        description="Process each configured index up to its current global checkpoint "
        "(documents written later are left to `es-embed serve`), with a progress line.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML settings file")
    p.add_argument("--index", action="append", metavar="NAME", help="only this index (repeat)")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="only embed again the documents listed as failed (es-embed status); those that "
        "pass lose their record, the others keep it with the new reason",
    )
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    settings = settings_or_report(args.config)
    if settings is None:
        return 2
    return run_command(_run(settings, args.index, args.retry_failed), settings)


async def _run(settings: Settings, names: list[str] | None, retry: bool = False) -> int:
    confs = [settings.index(n) for n in names] if names else list(settings.indices)
    if not confs:
        raise ConfigError("indices: nothing to back-fill; add at least one index to the config")
    async with es_client(settings) as es, embedding_service(settings) as service:
        shape = service.info.shape
        followers = [
            Follower(es, service, resolve_index(conf, shape), settings.follow) for conf in confs
        ]
        bar = ProgressLine("done")  # its clock starts now, after the model loaded
        show = asyncio.create_task(_show(bar, followers))
        try:
            if retry:
                await asyncio.gather(*(_retry(es, service, f, settings) for f in followers))
            else:
                give_up = settings.follow.give_up_seconds
                await asyncio.gather(*(f.run_once_to_current(give_up) for f in followers))
        finally:
            show.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await show
            await asyncio.gather(*(f.stop() for f in followers), return_exceptions=True)
        bar.finish(**totals(followers))
    failed = sum(f.progress.failed for f in followers)
    if failed:
        docs = "1 document was" if failed == 1 else f"{failed} documents were"
        print(f"error: {docs} skipped and listed as failed; `es-embed status` shows why, "
              "`es-embed backfill --retry-failed` tries again", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


async def _retry(
    es: AsyncElasticsearch, service: EmbeddingService, follower: Follower, settings: Settings
) -> None:
    await retry_failed(es, service, follower.target, settings.follow, follower.progress)


def totals(followers: list[Follower]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(getattr(f.progress, key) or 0 for f in followers)

    known = [f.progress.total for f in followers]
    return {
        "done": total("done"),
        "total": sum(t for t in known if t) if all(t is not None for t in known) else None,
        "read": total("checked"),
        "embedded": total("embedded"),
        "skipped": total("skipped"),
        "conflicts": total("conflicts"),
        "failed": total("failed"),
        "cleared": total("cleared"),
    }


async def _show(bar: ProgressLine, followers: list[Follower]) -> None:
    while True:
        bar.update(**totals(followers))
        await asyncio.sleep(0.2)
