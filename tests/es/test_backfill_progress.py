"""es-embed backfill counts documents done, not read: a small backlog is read in one page
long before it is embedded, and the progress line must not say 100% while the model works."""

from __future__ import annotations

import asyncio

import pytest

from es_embed.cli.backfill import totals
from es_embed.cli.progress import render
from tests.es.follow_support import followed_index
from tests.fakes import GatedEncoder

pytestmark = pytest.mark.es


@pytest.mark.timeout(60)
async def test_a_backlog_read_at_once_is_not_shown_done_until_embedded(es_url: str) -> None:
    encoder = GatedEncoder()
    async with followed_index(es_url, encoder=encoder) as env:
        ops: list[dict[str, object]] = []
        for i in range(30):
            ops += [{"index": {"_index": env.index, "_id": str(i)}}, {"text": f"doc {i}"}]
        for i in range(2):  # no text: done at once, as skipped
            ops += [{"index": {"_index": env.index, "_id": f"empty{i}"}}, {"title": ""}]
        await env.es.bulk(operations=ops, refresh=True)
        follower = env.follower()
        backfill = asyncio.create_task(follower.run_once_to_current())
        try:
            assert await asyncio.to_thread(encoder.entered.wait, 10)
            held = totals([follower])
            # Every document is read (one page) but only the two without text are done.
            assert (held["read"], held["done"], held["total"]) == (32, 2, 32)
            line = render("done", elapsed=1.0, **held)
            assert line.startswith("done 2/32 (6%) read 32 ") and "ETA 0:15" in line
        finally:
            encoder.gate.set()
        await backfill
    done = totals([follower])
    assert (done["done"], done["total"], done["embedded"], done["skipped"]) == (32, 32, 30, 2)
    assert "ETA" not in render("done", elapsed=2.0, **done)
