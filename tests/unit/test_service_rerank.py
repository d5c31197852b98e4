"""The reranker inside EmbeddingService: the query lane, one model per batch, embedding
queries ahead of queued pairs, and the errors the service raises itself."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import pytest

from es_embed.config import BatchSettings, ModelSettings
from es_embed.embed.batching import Item, Request, cut_batch
from es_embed.embed.protocol import ModelKind, Tokenized
from es_embed.embed.service import EmbeddingService
from es_embed.errors import EmbedError, ErrorKind
from es_embed.metrics import Registry
from tests.fakes import FakeEncoder, FakeReranker

M = TypeVar("M", FakeEncoder, FakeReranker)


def queue_of(kinds: str) -> deque[Item]:
    """One request per character: e = an embedding input, r = a reranker pair (length 4)."""
    out: deque[Item] = deque()
    for seq, code in enumerate(kinds):
        kind: ModelKind = "embed" if code == "e" else "rerank"
        out.append(Item(Request(1, None, kind=kind), 0, Tokenized((0, 1, 2, 3), 4), seq))
    return out


def test_a_batch_holds_one_kind_and_embeddings_go_first() -> None:
    queue = queue_of("rrrerre")
    first = cut_batch(queue, max_tokens=1000, max_size=8, window=16)
    assert [it.seq for it in first] == [3, 6]  # the embeddings, though the pairs came earlier
    second = cut_batch(queue, max_tokens=1000, max_size=8, window=16)
    assert [it.seq for it in second] == [0, 1, 2, 4, 5]
    assert not queue


def test_pairs_passed_over_keep_their_order_and_the_oldest_leads() -> None:
    queue = queue_of("rrerr")
    cut_batch(queue, max_tokens=1000, max_size=8, window=16)
    assert [it.seq for it in queue] == [0, 1, 3, 4]
    assert [it.seq for it in cut_batch(queue, max_tokens=8, max_size=8, window=16)] == [0, 1]


class Recorder:
    """A shared log of forward passes, by model, across an encoder and a reranker; a gated
    model's passes block until ``gate`` is set, so the test can queue work behind them."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()

    def watch(self, model: M, name: str, gated: bool = False) -> M:
        inner = model.forward

        def forward(batch: Sequence[Tokenized]) -> np.ndarray:
            self.log.append((name, len(batch)))
            if gated:
                self.entered.set()
                self.gate.wait(10)
            return inner(batch)

        model.forward = forward  # type: ignore[method-assign]
        return model


async def started(
    reranker: FakeReranker | None,
    encoder: FakeEncoder | None = None,
    registry: Registry | None = None,
    **batching: int,
) -> EmbeddingService:
    svc = EmbeddingService(
        encoder or FakeEncoder(),
        BatchSettings(**batching),  # type: ignore[arg-type]
        ModelSettings(name="fake"),
        registry,
        reranker=reranker,
    )
    await svc.start()
    return svc


async def test_an_embedding_query_waits_for_at_most_the_rerank_batch_in_flight() -> None:
    recorder = Recorder()
    reranker = recorder.watch(FakeReranker(), "rerank", gated=True)
    # Batches of two pairs by count alone (the gated pass would teach a slow speed otherwise).
    embedder = recorder.watch(FakeEncoder(), "embed")
    svc = await started(reranker, embedder, max_batch_size=2, max_rerank_batch_ms=0)
    try:
        first = asyncio.create_task(svc.rerank("q", ["a", "b"]))
        await asyncio.to_thread(recorder.entered.wait, 5)  # a rerank batch is in flight
        more = asyncio.create_task(svc.rerank("q", [f"doc {i}" for i in range(6)]))
        await asyncio.sleep(0.05)
        query = asyncio.create_task(svc.embed(["a query"], input_type="query"))
        await asyncio.sleep(0.05)
        recorder.gate.set()
        await asyncio.gather(first, more, query)
        assert recorder.log == [("rerank", 2), ("embed", 1), *[("rerank", 2)] * 3]
    finally:
        recorder.gate.set()
        await svc.stop()


async def test_a_querys_tokenisation_never_waits_behind_rerank_pairs() -> None:
    """Pairs are tokenised on their own thread: a query sent while a window of pairs is being
    tokenised is answered first (on one shared thread it would reach the lane after them,
    then wait for their batch as well)."""
    tokenizing, release = threading.Event(), threading.Event()
    reranker = FakeReranker()
    inner = reranker.tokenize_pairs

    def slow_pairs(*args: Any) -> list[Tokenized]:
        tokenizing.set()
        release.wait(10)
        return inner(*args)

    reranker.tokenize_pairs = slow_pairs  # type: ignore[method-assign]
    recorder = Recorder()
    svc = await started(reranker, recorder.watch(FakeEncoder(), "embed"))
    try:
        pairs = asyncio.create_task(svc.rerank("q", [f"doc {i}" for i in range(50)]))
        await asyncio.to_thread(tokenizing.wait, 5)
        query = await asyncio.wait_for(svc.embed(["a query"], input_type="query"), 5)
        assert query.vectors.shape[0] == 1 and not pairs.done()
        release.set()
        assert len((await pairs).scores) == 50
    finally:
        release.set()
        await svc.stop()


async def test_scores_come_back_in_document_order_with_usage() -> None:
    registry = Registry()
    svc = await started(FakeReranker(max_length=8), registry=registry, max_batch_size=2)
    documents = ["paris capital", "bananas", "a b c d e f g paris"]
    try:
        result = await svc.rerank("paris capital", documents)
    finally:
        await svc.stop()
    fake = FakeReranker(max_length=8)
    pairs = fake.tokenize_pairs("paris capital", documents)
    np.testing.assert_allclose(result.scores, fake.forward(pairs))
    assert list(result.scores) == [1.0, 0.0, 0.0]  # the third lost "paris" to the cut
    assert result.total_tokens == sum(len(t.ids) for t in pairs)
    assert result.truncated == 1
    tokens = registry.get_sample_value("es_embed_tokens_total", {"lane": "query"})
    assert tokens == result.total_tokens
    assert registry.get_sample_value("es_embed_truncated_inputs_total") == 1


async def test_service_refusals() -> None:
    svc = await started(None)
    try:
        with pytest.raises(EmbedError) as err:
            await svc.rerank("q", ["a"])
        assert err.value.kind is ErrorKind.NOT_FOUND and "reranker.name" in err.value.message
    finally:
        await svc.stop()
    svc = await started(FakeReranker(family="cross-encoder"))
    try:
        with pytest.raises(EmbedError) as err:
            await svc.rerank("q", ["a"], instruction="Find")
        assert err.value.kind is ErrorKind.INVALID_REQUEST and err.value.param == "instruction"
        empty = await svc.rerank("q", [])
        assert empty.scores.shape == (0,) and empty.total_tokens == 0
    finally:
        await svc.stop()


async def test_rerank_batches_are_cut_to_the_bound_at_the_rerankers_speed() -> None:
    """Once a rerank batch has run, the next are cut to max_rerank_batch_ms at the speed it
    measured: the fake sleeps 1 ms per padded token, so 100 ms hold at most 100 tokens (a
    measured pass is never faster than its sleep); an embedding query sent meanwhile waits
    for one such batch, not for the whole window."""
    reranker = FakeReranker(seconds_per_token=0.001)
    svc = await started(reranker, max_rerank_batch_ms=100)
    documents = [f"document number {i} about something" for i in range(50)]
    pairs = reranker.tokenize_pairs("q", documents)
    try:
        first = await svc.rerank("q", documents)
        assert reranker.batches == [50]  # nothing measured yet: the token budget alone
        reranker.batches.clear()
        second = asyncio.create_task(svc.rerank("q", documents))
        while not reranker.batches:
            await asyncio.sleep(0.01)
        query = await svc.embed(["a query"], input_type="query")
        await second
    finally:
        await svc.stop()
    longest = max(len(t.ids) for t in pairs)
    assert len(reranker.batches) > 1 and sum(reranker.batches) == 50
    assert max(reranker.batches) * longest <= 100
    np.testing.assert_allclose((await second).scores, first.scores)
    assert query.vectors.shape[0] == 1
