"""Bulk batches bounded by model time: the cut from the measured speed, and the token budget.

Each device's pace is fed measured times directly (``Pace.ran``), so every expectation is
exact; the service-level test runs the fake encoder's ``seconds_per_token``
through a real warm-up.
"""

from __future__ import annotations

from typing import Any

import pytest

from es_embed.config import BatchSettings, ModelSettings
from es_embed.embed.batching import Request
from es_embed.embed.lanes import Lanes
from es_embed.embed.protocol import Lane, Tokenized
from es_embed.embed.service import EmbeddingService
from es_embed.embed.startup import warm_up
from es_embed.metrics import Registry
from tests.fakes import FakeEncoder, FakeReranker


def tokens(lengths: list[int]) -> list[Tokenized]:
    return [Tokenized(tuple(range(2, 2 + n)), n) for n in lengths]


def lanes(**batching: Any) -> Lanes:
    return Lanes(BatchSettings(**batching), Registry())


def enqueue(lanes: Lanes, lane: Lane, lengths: list[int]) -> None:
    lanes.enqueue(lane, Request(size=len(lengths), future=None), tokens(lengths))


async def test_bulk_batch_is_cut_to_the_bound_at_the_measured_speed() -> None:
    ln = lanes(max_bulk_batch_ms=25)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)  # 0.1 ms per padded token
    assert pace.bulk_budget() == 250  # 25 ms of model time
    enqueue(ln, "bulk", [10] * 30)
    assert len(await ln.next_batch(pace, "bulk")) == 25  # 25 x 10 padded tokens = 250


async def test_speed_is_a_moving_average_of_bulk_batches_only() -> None:
    ln = lanes(max_bulk_batch_ms=25)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)
    pace.ran("query", tokens([5, 5]), 0.5)  # several queries: neither fixed nor token cost
    assert pace.bulk_budget() == 250 and pace.speed.fixed == 0
    pace.ran("bulk", tokens([50, 50]), 0.02)  # 0.2 ms per token: average 0.8 x 0.1 + 0.2 x 0.2
    assert pace.bulk_budget() == int(0.025 / 0.00012)
    assert pace.tokens_per_second == pytest.approx(1 / 0.00012)


async def test_a_lone_query_teaches_the_fixed_cost_of_a_pass() -> None:
    ln = lanes(max_bulk_batch_ms=25)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)  # 0.1 ms per token, no fixed cost known yet
    pace.ran("query", tokens([10]), 0.003)  # 1 ms of tokens: 2 ms fixed
    assert pace.speed.fixed == pytest.approx(0.002)
    pace.ran("bulk", tokens([100]), 0.012)  # 2 ms fixed + 10 ms of tokens: 0.1 ms a token
    assert pace.speed.per_token == pytest.approx(0.0001)
    assert pace.bulk_budget() == pytest.approx(230, abs=1)  # (25 - 2) ms of tokens (floored)


async def test_a_large_fixed_cost_keeps_bulk_batches_efficient() -> None:
    ln = lanes(max_bulk_batch_ms=25)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)
    pace.ran("query", tokens([10]), 0.021)  # 20 ms fixed: a 25 ms batch would be 80% of it
    pace.ran("bulk", tokens([100]), 0.03)
    # The batch grows until the fixed cost is half of it: 20 ms of tokens, not 5.
    assert pace.bulk_budget() == pytest.approx(200, abs=1)  # floored


async def test_a_stale_fixed_cost_still_leaves_the_tokens_a_cost() -> None:
    ln = lanes(max_bulk_batch_ms=25)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)
    pace.ran("query", tokens([1]), 0.0501)  # 50 ms fixed on a busy moment
    pace.ran("bulk", tokens([100]), 0.02)  # faster than the fixed cost alone: a tenth is tokens
    assert pace.speed.per_token == pytest.approx(0.8 * 0.0001 + 0.2 * 0.00002)


async def test_no_bound_fills_the_token_budget() -> None:
    ln = lanes(max_bulk_batch_ms=0)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)
    assert pace.bulk_budget() == 16384
    enqueue(ln, "bulk", [10] * 30)
    assert len(await ln.next_batch(pace, "bulk")) == 30


async def test_until_a_pass_is_measured_bulk_batches_fill_the_token_budget() -> None:
    ln = lanes(max_batch_tokens=200)
    pace = ln.paces[0]
    assert pace.bulk_budget() == 200
    enqueue(ln, "bulk", [10] * 30)
    assert len(await ln.next_batch(pace, "bulk")) == 20


async def test_queries_are_cut_by_the_token_budget_not_the_bound() -> None:
    ln = lanes(max_bulk_batch_ms=25)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)
    enqueue(ln, "query", [10] * 30)
    enqueue(ln, "bulk", [10] * 30)
    assert len(await ln.next_batch(pace, "query")) == 30


async def test_a_slow_model_still_gets_one_input_per_bulk_batch() -> None:
    ln = lanes(max_bulk_batch_ms=25)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([10]), 1.0)  # 100 ms per token: not even one token fits 25 ms
    assert pace.bulk_budget() == 1
    enqueue(ln, "bulk", [10] * 3)
    assert len(await ln.next_batch(pace, "bulk")) == 1  # the oldest input always goes


async def test_out_of_memory_lowers_both_lanes_budget_and_the_gauge_shows_it() -> None:
    registry = Registry()
    ln = Lanes(BatchSettings(max_bulk_batch_ms=25), registry)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)
    pace.ran("bulk", tokens([10] * 32), 0.5, failed_tokens=320)  # did not fit: not learnt
    ln.ran("bulk")  # the lanes hear of it: the gauge follows the pace
    assert pace.budget.current == 160 and pace.bulk_budget() == 160
    enqueue(ln, "query", [10] * 30)
    assert len(await ln.next_batch(pace, "query")) == 16
    for lane in ("query", "bulk"):
        assert registry.get_sample_value("es_embed_batch_token_budget", {"lane": lane}) == 160


@pytest.mark.parametrize(
    ("bound_ms", "prove_budget", "warm_up_batches", "batches"),
    [
        # 10 ms per padded token; 250 ms of model time = 25 tokens: two 10-token documents.
        # Warm-up: 64 // 32 = 2 inputs of 32 tokens, then one input (the bound), a query.
        # The sizes are exact while the overhead of a pass stays under 50 ms (a quarter).
        (250, True, [2, 1, 1], [2, 2, 2]),
        # Without proving the budget (CPU) the first pass is one input: the speed is the same.
        (250, False, [1, 1, 1], [2, 2, 2]),
        # No bound: the warm-up's second pass and the documents fill the token budget.
        (0, True, [2, 2, 1], [6]),
    ],
)
async def test_service_cuts_bulk_batches_from_the_fakes_speed_after_warm_up(
    bound_ms: float, prove_budget: bool, warm_up_batches: list[int], batches: list[int]
) -> None:
    enc = FakeEncoder(max_length=32, seconds_per_token=0.01)
    batching = BatchSettings(max_batch_tokens=64, max_bulk_batch_ms=bound_ms)
    svc = EmbeddingService(enc, batching, ModelSettings(name="fake"))
    await svc.start()
    try:
        await warm_up(svc, enc, batching, prove_budget=prove_budget)
        assert enc.batches == warm_up_batches
        enc.batches.clear()
        await svc.embed([" ".join(f"w{i}{j}" for j in range(9)) for i in range(6)])  # 10 tokens
        assert enc.batches == batches
    finally:
        await svc.stop()


async def test_rerank_batches_learn_their_own_speed_and_bound() -> None:
    ln = lanes(max_bulk_batch_ms=25, max_rerank_batch_ms=100)
    pace = ln.paces[0]
    pace.ran("bulk", tokens([100]), 0.01)  # the embedder: 0.1 ms per padded token
    pace.ran("query", tokens([50, 50]), 0.1, kind="rerank")  # the reranker: 1 ms per token
    assert pace.bulk_budget() == 250 and pace.rerank_budget() == 100
    assert pace.tokens_per_second == pytest.approx(10_000)  # the embedder's, as the log says
    # On the query lane: a rerank batch is cut to 100 tokens, an embedding batch is not.
    ln.enqueue("query", Request(size=30, future=None, kind="rerank"), tokens([10] * 30))
    assert len(await ln.next_batch(pace, "query")) == 10
    ln.enqueue("query", Request(size=30, future=None), tokens([10] * 30))
    batch = await ln.next_batch(pace, "query")  # embeddings first, and the token budget alone
    assert batch[0].request.kind == "embed" and len(batch) == 30


def test_no_rerank_bound_until_measured_or_when_zero() -> None:
    assert lanes().paces[0].rerank_budget() == 16384
    ln = lanes(max_rerank_batch_ms=0)
    ln.paces[0].ran("query", tokens([50, 50]), 0.1, kind="rerank")
    assert ln.paces[0].rerank_budget() == 16384


async def test_warm_up_measures_the_rerankers_speed() -> None:
    """The warm-up runs one long pair, then a batch cut to the bound at the speed that pair
    showed (4 ms per padded token, 64 tokens a pair: 900 ms hold 3 pairs while the overhead
    of the first pass stays under 44 ms)."""
    enc = FakeEncoder(max_length=32)
    reranker = FakeReranker(max_length=64, seconds_per_token=0.004)
    batching = BatchSettings(max_rerank_batch_ms=900)
    svc = EmbeddingService(enc, batching, ModelSettings(name="fake"), reranker=reranker)
    await svc.start()
    try:
        await warm_up(svc, enc, batching, prove_budget=False, reranker=reranker)
        assert reranker.batches == [1, 3]
        assert 64 <= svc.lanes.paces[0].rerank_budget() <= 225
    finally:
        await svc.stop()


async def test_a_batch_given_back_goes_first_in_its_order() -> None:
    ln = lanes(max_batch_size=3)
    pace = ln.paces[0]
    enqueue(ln, "bulk", [4, 5, 6, 7, 8])
    taken = await ln.next_batch(pace, "bulk")
    ln.give_back("bulk", taken)  # its device went out before running it
    again = await ln.next_batch(pace, "bulk")
    assert [it.seq for it in again] == [it.seq for it in taken]
    assert [len(it.tokens.ids) for it in await ln.next_batch(pace, "bulk")] == [7, 8]
