"""The one bulk helper and the one policy over it: the feed's write-back, the embedding
retries. Elasticsearch is a scripted node under a real client (``tests.fakes.ScriptedBulk``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch, ConnectionError

from es_embed.config import IndexSettings
from es_embed.elastic.bulk import BulkRetry, bulk_write
from es_embed.elastic.refusals import RetryLater, Verdict
from es_embed.elastic.retry import Backoff, embed_retrying
from es_embed.errors import EmbedError, ErrorKind
from es_embed.follow.feed import Progress, ShardFeed
from es_embed.indices.document import vector_doc
from es_embed.indices.resolve import resolve_index
from tests.fakes import ANY_SHAPE, ScriptedBulk, Whole

FAST = BulkRetry(max_retries=2, initial_backoff=0.001, max_backoff=0.001)
WRITTEN = (201, None)
TOO_MANY = (429, "es_rejected_execution_exception")
BLOCKED = (403, "cluster_block_exception")


def index_actions(n: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [({"index": {"_index": "i", "_id": f"d{k}"}}, {"text": f"t{k}"}) for k in range(n)]


async def write(script: ScriptedBulk, actions: Any, retry: BulkRetry = FAST) -> Any:
    es = script.client()
    try:
        return await bulk_write(es, actions, retry)
    finally:
        await es.close()


async def test_outcomes_line_up_with_the_actions_after_the_clients_429_retries() -> None:
    script = ScriptedBulk(
        lambda ids: Whole(429, "es_rejected_execution_exception"),
        lambda ids: [TOO_MANY if k % 2 else WRITTEN for k in range(len(ids))],
        lambda ids: [BLOCKED, WRITTEN, WRITTEN],
    )
    outcomes = await write(script, index_actions(6))
    assert script.calls == [[f"d{k}" for k in range(6)]] * 2 + [["d1", "d3", "d5"]]
    # The helper answers d1 after d2: the outcomes still follow the actions.
    assert [o.status for o in outcomes] == [201, 403, 201, 201, 201, 201]
    refusal = outcomes[1].refusal
    assert refusal is not None and refusal.verdict is Verdict.RETRYABLE
    assert refusal.type == "cluster_block_exception"


async def test_a_429_past_the_clients_retries_is_reported_retryable() -> None:
    script = ScriptedBulk(*[lambda ids: [TOO_MANY] * len(ids)] * 3)
    outcomes = await write(script, index_actions(2))
    assert len(script.calls) == 3  # the first try and FAST's two retries
    assert all(o.refusal and o.refusal.verdict is Verdict.RETRYABLE for o in outcomes)


async def test_a_refused_request_is_reported_per_item_from_its_error_type() -> None:
    script = ScriptedBulk(lambda ids: Whole(400, "illegal_argument_exception"))
    outcomes = await write(script, index_actions(3))
    assert len(script.calls) == 1
    assert [o.refusal.verdict if o.refusal else None for o in outcomes] == [Verdict.FINAL] * 3
    assert {o.refusal.type for o in outcomes if o.refusal} == {"illegal_argument_exception"}


async def test_document_fields_are_never_taken_for_bulk_metadata() -> None:
    script = ScriptedBulk()
    doc = {"routing": "r1", "version": 3, "_id": "not-this", "text": "x"}
    await write(script, [({"index": {"_index": "i", "_id": "d0"}}, doc)])
    assert script.actions == [[{"index": {"_index": "i", "_id": "d0"}}]]


async def test_an_action_needs_an_id_and_no_answer_raises() -> None:
    with pytest.raises(ValueError, match="without an _id"):
        await write(ScriptedBulk(), [({"index": {"_index": "i"}}, {"text": "x"})])
    es = AsyncElasticsearch("http://127.0.0.1:9", max_retries=0, request_timeout=2)
    try:
        with pytest.raises(ConnectionError):
            await bulk_write(es, index_actions(1), FAST)
    finally:
        await es.close()


# ---- the feed's write-back --------------------------------------------------------------


class FailureRecords:
    """The state index's failure records, as far as the write-back uses them."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    async def record_failure(
        self, name: str, uuid: str, shard: int, hit: dict[str, Any], reason: str
    ) -> bool:
        self.records.append((hit["_id"], reason))
        return True


def feed_over(es: AsyncElasticsearch) -> ShardFeed:
    target = resolve_index(IndexSettings(name="idx", dims=32), ANY_SHAPE)
    return ShardFeed(es, None, target, FailureRecords(), index="idx-1", uuid="u", shard=0,  # type: ignore[arg-type]
                     page_size=10, progress=Progress())  # fmt: skip


def hit(doc_id: str, seq_no: int, routing: str | None = None) -> dict[str, Any]:
    h = {"_index": "idx-1", "_id": doc_id, "_seq_no": seq_no, "_primary_term": 1}
    return h if routing is None else {**h, "_routing": routing}


def doc_with_vector() -> dict[str, Any]:
    return vector_doc("embedding", "m", 32, np.ones(32, dtype=np.float32), "hash")


async def test_write_back_drops_conflicts_gives_up_final_refusals_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = ScriptedBulk(
        lambda ids: [
            (200, None),
            (409, "version_conflict_engine_exception"),
            (400, "document_parsing_exception"),
            (404, "document_missing_exception"),
            (200, None),
        ]  # fmt: skip
    )
    es = script.client()
    feed = feed_over(es)
    given_up: list[tuple[str, str]] = []
    original = feed._give_up

    async def spy(h: dict[str, Any], reason: str) -> None:
        given_up.append((h["_id"], reason))
        await original(h, reason)

    feed._give_up = spy  # type: ignore[method-assign]
    ops = [(hit("a", 5, routing="r"), doc_with_vector()), (hit("b", 6), doc_with_vector()),
           (hit("c", 7), doc_with_vector()), (hit("d", 8), doc_with_vector()),
           (hit("e", 9), vector_doc("embedding", "m", 32, None, None))]  # fmt: skip
    try:
        with caplog.at_level(logging.ERROR):
            assert await feed._write(ops) == (1, 1)
    finally:
        await es.close()
    (first,) = script.actions
    assert first[0] == {"update": {"_index": "idx-1", "_id": "a", "if_seq_no": 5,
                                   "if_primary_term": 1, "routing": "r"}}  # fmt: skip
    assert [(i, "document_parsing_exception" in why) for i, why in given_up] == [("c", True)]
    assert (feed.progress.conflicts, feed.progress.failed) == (2, 1)
    assert "idx-1: document c is skipped and listed as failed" in caplog.text


async def test_a_blocked_write_back_raises_so_the_page_is_retried() -> None:
    script = ScriptedBulk(lambda ids: [(200, None), BLOCKED, (400, "mapper_parsing_exception")])
    es = script.client()
    feed = feed_over(es)
    ops = [(hit(k, n), doc_with_vector()) for n, k in enumerate("abc")]
    try:
        with pytest.raises(RetryLater) as err:
            await feed._write(ops)
    finally:
        await es.close()
    assert err.value.count == 1 and err.value.refusal.type == "cluster_block_exception"
    assert "idx-1" in str(err.value)
    # What was written is counted now (the retried page skips it by hash); c is given up.
    assert (feed.progress.embedded, feed.progress.failed, feed.progress.conflicts) == (1, 1, 0)


# ---- the embedding service ------------------------------------------------------------


class Flaky:
    def __init__(self, *errors: EmbedError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "vectors"


async def test_embedding_waits_out_a_full_lane_and_a_failed_model(
    caplog: pytest.LogCaptureFixture,
) -> None:
    full = EmbedError(ErrorKind.OVERLOADED, "full", retry_after=0.01)
    down = EmbedError(ErrorKind.UNAVAILABLE, "model failed")
    call = Flaky(full, down, down, full)
    with caplog.at_level(logging.WARNING):
        got = await asyncio.wait_for(embed_retrying(call, Backoff(0.01, 0.02), "idx"), 5)
    assert (got, call.calls) == ("vectors", 5)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "idx: the model is unavailable" in warnings[0].getMessage()


async def test_embedding_refusals_of_the_input_are_the_callers() -> None:
    call = Flaky(EmbedError(ErrorKind.INVALID_REQUEST, "too long"))
    with pytest.raises(EmbedError) as err:
        await embed_retrying(call, Backoff(0.01, 0.02), "idx")
    assert err.value.kind is ErrorKind.INVALID_REQUEST and call.calls == 1
