"""No document can stall the feed (issue 14): one the hash, the model or Elasticsearch refuses
is recorded as failed with its reason, logged once, counted, and skipped so the shard moves
on; rewriting it retries it by itself. After each case every document has the vector of its
current text or is listed as failed, with its reason, at its current version."""

from __future__ import annotations

import logging

import pytest

from es_embed.config import ModelSettings
from es_embed.follow.state import state_id
from es_embed.metrics import Registry
from tests.es.follow_support import (
    POISON,
    Env,
    all_docs,
    failures,
    followed_index,
    only_failed_left,
    put_raw,
    running,
    stale_documents,
    unaccounted,
    wait_until,
)
from tests.fakes import FakeEncoder, OutOfMemoryEncoder

pytestmark = pytest.mark.es

SKIPPED_LOG = "is skipped and listed as failed"


def good_ops(index: str, ids: range) -> list[dict]:
    return [
        op
        for i in ids
        for op in (
            {"index": {"_index": index, "_id": f"good-{i}"}},
            {"title": f"doc {i}", "text": f"plain text {i}"},
        )
    ]


async def write_poison_between_good(env: Env) -> int:
    """good-0..9, the poison document, good-10..19, all on the one shard; its _seq_no."""
    await env.es.bulk(operations=good_ops(env.index, range(10)))
    seq_no = await put_raw(env.es, env.index, "poison", POISON)
    await env.es.bulk(operations=good_ops(env.index, range(10, 20)))
    return seq_no


async def global_checkpoint(env: Env) -> int:
    stats = await env.es.indices.stats(index=env.index, level="shards", metric="docs")
    copies = stats["indices"][env.index]["shards"]["0"]
    return int(next(c["seq_no"]["global_checkpoint"] for c in copies if c["routing"]["primary"]))


def skipped_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if SKIPPED_LOG in r.getMessage()]


async def test_the_poison_document_is_listed_and_skipped_and_a_rewrite_clears_it(
    es_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="es_embed")
    registry = Registry()
    async with followed_index(es_url, follow={"page_size": 4}) as env:
        follower = env.follower(registry)
        async with running(follower):
            seq_no = await write_poison_between_good(env)
            await wait_until(lambda: only_failed_left(env, "poison"), what="poison listed")
            record = (await failures(env))["poison"]
            assert record.reason == (
                "title contains a lone surrogate (\\ud800 at character 5), "
                "which is not valid Unicode text"
            )
            assert (record.index, record.seq_no, record.name) == (env.index, seq_no, env.index)
            assert record.failed_at
            assert await unaccounted(env) == []

            async def moved_past() -> bool:  # our write-backs move the global checkpoint too
                return list(follower.checkpoints.values()) == [await global_checkpoint(env)]

            await wait_until(moved_past, what="the checkpoint moved past the poison document")
            assert follower.checkpoints[(env.index, 0)] > seq_no

            async def gauge_is(n: int) -> bool:
                labels = {"index": env.index}
                return registry.get_sample_value("es_embed_follow_failed_documents", labels) == n

            await wait_until(lambda: gauge_is(1), what="the failed-documents gauge")
            assert follower.progress.failed == 1
            assert skipped_logs(caplog) == [
                f"{env.index}: document poison is skipped and listed as failed (es-embed status): "
                f"{record.reason}"
            ]

            # Rewritten with valid text: it comes back through the feed and passes.
            await env.es.index(index=env.index, id="poison", document={"title": "now valid"})

            async def healed() -> bool:
                stale = stale_documents(env, await all_docs(env.es, env.index))
                return not stale and not await failures(env)

            await wait_until(healed, what="the rewrite embedded and its record cleared")
            await wait_until(lambda: gauge_is(0), what="the gauge back to 0")
        assert follower.progress.recovered == 1
        assert len(skipped_logs(caplog)) == 1
        labels = {"index": env.index, "outcome": "failed"}
        assert registry.get_sample_value("es_embed_follow_documents_total", labels) == 1


async def test_a_page_read_again_does_not_log_or_record_the_failure_again(
    es_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="es_embed")
    async with followed_index(es_url, follow={"page_size": 4}) as env:
        first = env.follower()
        async with running(first):
            await write_poison_between_good(env)
            await wait_until(lambda: only_failed_left(env, "poison"), what="poison listed")
        before = (await failures(env))["poison"]
        # As after a crash before the checkpoint was stored: every page is read again.
        uuid = (await env.es.indices.get(index=env.index))[env.index]["settings"]["index"]["uuid"]
        await env.es.delete(index=env.state, id=state_id(uuid, 0), refresh=True)
        second = env.follower()
        async with running(second):
            await wait_until(lambda: _checked_all(second, 21), what="everything read again")
        assert second.progress.failed == 1  # met again, counted by this run
        assert second.progress.embedded == 0  # the good ones were current
        assert (await failures(env))["poison"] == before  # not rewritten: same time
        assert len(skipped_logs(caplog)) == 1  # logged by the first follower only
        assert await unaccounted(env) == []


async def _checked_all(follower, n: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(follower.progress.checked >= n)


async def refused_between_good(
    es_url: str, encoder: FakeEncoder, page_size: int, model: ModelSettings | None = None
) -> tuple[str, tuple[bool, str | None]]:
    """good-0..2, a 40-word document the model refuses, good-3..5: it ends listed and the rest
    embedded. Its reason, and the service's health at the end."""
    async with followed_index(
        es_url, encoder=encoder, model=model, follow={"page_size": page_size}
    ) as env:
        follower = env.follower()
        async with running(follower):
            await env.es.bulk(operations=good_ops(env.index, range(3)))
            long_text = " ".join(f"word{i}" for i in range(40))
            await env.es.index(index=env.index, id="long", document={"text": long_text})
            await env.es.bulk(operations=good_ops(env.index, range(3, 6)))

            async def settled() -> bool:
                stale = stale_documents(env, await all_docs(env.es, env.index))
                return stale == ["long"] and "long" in await failures(env)

            await wait_until(settled, what="the long document listed, the rest embedded")
        reason = (await failures(env))["long"].reason
        assert follower.progress.failed == 1
        assert follower.progress.embedded == 6
        assert await unaccounted(env) == []
        return reason, env.service.health()


@pytest.mark.parametrize("page_size", [1, 4])
async def test_a_document_the_model_refuses_is_listed_and_the_rest_embedded(
    es_url: str, page_size: int
) -> None:
    model = ModelSettings(name="fake", truncation="error")
    reason, _ = await refused_between_good(es_url, FakeEncoder(max_length=16), page_size, model)
    assert reason.startswith("the model refused its text: input[0] has 41 tokens")
    assert "model.truncation: truncate" in reason


async def test_a_document_too_large_for_the_devices_memory_is_listed_and_the_rest_embedded(
    es_url: str,
) -> None:
    # Issue 13: a GPU that cannot hold one input even alone answers 413; the shard moves on.
    import torch  # noqa: F401  (the fake raises torch's error: import it before the clock runs)

    encoder = OutOfMemoryEncoder(most_inputs=64, most_tokens=30)
    reason, health = await refused_between_good(es_url, encoder, 4)
    assert reason.startswith("the model refused its text: input[0] has 41 tokens, more than")
    assert "memory holds in one forward pass even alone" in reason
    assert health == (True, None)  # a memory limit is not a model failure


async def test_a_vector_elasticsearch_refuses_for_good_is_listed(es_url: str) -> None:
    # The index maps 16 dims where the config says 32: every write-back is a 400, final.
    async with followed_index(es_url, setup=False) as env:
        await env.es.indices.create(
            index=env.index,
            mappings={"properties": {"embedding": {"type": "dense_vector", "dims": 16}}},
        )
        follower = env.follower()
        async with running(follower):
            await env.es.bulk(operations=good_ops(env.index, range(3)))

            async def all_listed() -> bool:
                return len(await failures(env)) == 3

            await wait_until(all_listed, what="three refused write-backs listed")
            await wait_until(
                lambda: _checkpoint_at_least(follower, env, 2), what="the checkpoint moved on"
            )
        for record in (await failures(env)).values():
            assert record.reason.startswith(
                "Elasticsearch refused its vector: 400 document_parsing_exception"
            )
        assert await unaccounted(env) == []


async def _checkpoint_at_least(follower, env: Env, seq_no: int) -> bool:  # type: ignore[no-untyped-def]
    return bool(follower.checkpoints.get((env.index, 0), -1) >= seq_no)
