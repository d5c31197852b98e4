"""The followers' metrics on the real node: every configured index counted from zero."""

from __future__ import annotations

import dataclasses

import pytest

from es_embed.config import IndexSettings
from es_embed.follow.follower import running_followers
from es_embed.metrics import Registry
from tests.es.follow_support import DIMS, all_current, followed_index, unique, wait_until

pytestmark = pytest.mark.es

DOCS = "es_embed_follow_documents_total"
OUTCOMES = ("checked", "embedded", "skipped", "conflicts", "failed", "cleared")


async def test_document_counters_start_at_zero_for_every_configured_index(es_url: str) -> None:
    async with followed_index(es_url) as env:
        # A second configured index that does not exist yet: counted from zero all the same.
        absent = unique("follow-absent")
        settings = dataclasses.replace(
            env.settings, indices=(*env.settings.indices, IndexSettings(name=absent, dims=DIMS))
        )
        registry = Registry()

        def docs(index: str, outcome: str) -> float | None:
            return registry.get_sample_value(DOCS, {"index": index, "outcome": outcome})

        async with running_followers(settings, env.service, env.es, registry) as followers:
            assert [f.target.name for f in followers] == [env.index, absent]
            for index in (env.index, absent):
                assert [docs(index, outcome) for outcome in OUTCOMES] == [0.0] * len(OUTCOMES)
            await env.es.index(index=env.index, id="1", document={"text": "counted"})
            await wait_until(lambda: all_current(env), what="embedded")

            async def reported() -> bool:
                lag = registry.get_sample_value(
                    "es_embed_follow_lag_operations", {"index": env.index, "shard": "0"}
                )
                return docs(env.index, "embedded") == 1.0 and lag == 0.0

            await wait_until(reported, what="the embedded document counted, no lag left")
        # Our own write-back comes back through the feed too (checked, then skipped by hash).
        assert (docs(env.index, "checked") or 0) >= 1
        assert [docs(absent, outcome) for outcome in OUTCOMES] == [0.0] * len(OUTCOMES)
