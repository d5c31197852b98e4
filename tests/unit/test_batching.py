"""Batch formation: token budget on padded length, count cap, oldest-first, no starvation."""

from __future__ import annotations

from collections import deque

from es_embed.embed.batching import Item, Request, cut_batch, padded_cost
from es_embed.embed.protocol import Tokenized


def items(lengths: list[int]) -> deque[Item]:
    req = Request(size=len(lengths), future=None)
    return deque(
        Item(req, i, Tokenized(tuple(range(n)), n), seq)
        for seq, (i, n) in enumerate(enumerate(lengths))
    )


def test_budget_counts_padded_length() -> None:
    q = items([10, 10, 100, 10])
    batch = cut_batch(q, max_tokens=40, max_size=8, window=8)
    assert [it.length for it in batch] == [10, 10, 10]
    assert padded_cost([it.length for it in batch]) <= 40
    assert [it.length for it in q] == [100]


def test_oldest_item_always_in_batch_even_if_over_budget() -> None:
    q = items([500, 5, 5])
    batch = cut_batch(q, max_tokens=100, max_size=8, window=8)
    assert [it.seq for it in batch] == [0]


def test_count_cap() -> None:
    q = items([3] * 10)
    assert len(cut_batch(q, max_tokens=10_000, max_size=4, window=16)) == 4
    assert len(q) == 6


def test_groups_similar_lengths_around_oldest() -> None:
    q = items([50, 2, 48, 3, 52, 1])
    batch = cut_batch(q, max_tokens=10_000, max_size=3, window=16)
    assert sorted(it.length for it in batch) == [48, 50, 52]


def test_cancelled_items_are_dropped() -> None:
    q = items([4, 4])
    q[0].request.cancelled = True
    assert cut_batch(q, 100, 8, 8) == [] and not q
