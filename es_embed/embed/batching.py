"""Queue entries and batch formation: pure logic, no threads, no event loop.

A batch is cut by a token budget counted the way the accelerator pays for it (longest
input x count, since the batch is padded) and by a count cap. To waste little on padding,
the batch is built around the *oldest* queued input from its neighbours in length within a
window of the queue head: grouping by length without ever starving the oldest input.

One forward pass runs one model, so a batch holds one kind of work (embeddings or reranker
pairs). Where both kinds wait in a lane, embeddings go first: they are small, and a long
rerank must never hold up an interactive query by more than the batch in flight.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from es_embed.embed.protocol import ModelKind, Tokenized

KIND_PRIORITY: tuple[ModelKind, ...] = ("embed", "rerank")


@dataclass(eq=False)
class Request:
    """One caller's inputs; completed when every item has its vector (or score)."""

    size: int
    future: Any  # asyncio.Future[np.ndarray]; Any keeps this module loop-free
    kind: ModelKind = "embed"  # the model its inputs go to
    vectors: list[Any] = field(default_factory=list)
    remaining: int = 0
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.vectors = [None] * self.size
        self.remaining = self.size


@dataclass(eq=False)
class Item:
    request: Request
    index: int  # position in the request
    tokens: Tokenized
    seq: int  # arrival order across the lane

    @property
    def length(self) -> int:
        return len(self.tokens.ids)


def padded_cost(lengths: list[int]) -> int:
    return max(lengths) * len(lengths) if lengths else 0


def cut_batch(
    queue: deque[Item],
    max_tokens: int,
    max_size: int,
    window: int,
    kind_tokens: Mapping[ModelKind, int] | None = None,
) -> list[Item]:
    """Remove and return the next batch from ``queue`` (oldest first; never empty if queue isn't).

    ``kind_tokens``: a tighter token budget for a batch of that kind (rerank batches are cut
    to bounded model time). Items of cancelled requests are dropped here, before they reach
    the model.
    """
    while queue and queue[0].request.cancelled:
        queue.popleft()
    if not queue:
        return []
    kind = _next_kind(queue)
    max_tokens = min(max_tokens, (kind_tokens or {}).get(kind, max_tokens))
    head, other = _head_of_kind(queue, kind, window)
    head.sort(key=lambda it: (it.length, it.seq))
    anchor = min(range(len(head)), key=lambda i: head[i].seq)  # the oldest item
    lo = hi = anchor
    longest = head[anchor].length
    # Grow around the anchor towards whichever neighbour is closer in length.
    while hi - lo + 1 < max_size:
        left = head[lo - 1] if lo > 0 else None
        right = head[hi + 1] if hi + 1 < len(head) else None
        if left is None and right is None:
            break
        take_right = right is not None and (
            left is None or right.length - longest <= head[lo].length - left.length
        )
        new_longest = max(longest, right.length) if take_right and right else longest
        if new_longest * (hi - lo + 2) > max_tokens:
            break
        if take_right:
            hi += 1
        else:
            lo -= 1
        longest = new_longest
    chosen = head[lo : hi + 1]
    rest = head[:lo] + head[hi + 1 :] + other
    rest.sort(key=lambda it: it.seq)  # back in arrival order, ahead of the untouched tail
    queue.extendleft(reversed(rest))
    return chosen


def _next_kind(queue: deque[Item]) -> ModelKind:
    kind = queue[0].request.kind
    if kind == KIND_PRIORITY[0]:
        return kind  # the common case costs O(1): a lane of embeddings only
    # The query lane holds at most its admission limit (or one oversized request): cheap.
    first = KIND_PRIORITY[0]
    waiting = any(it.request.kind == first and not it.request.cancelled for it in queue)
    return first if waiting else kind


def _head_of_kind(
    queue: deque[Item], kind: ModelKind, window: int
) -> tuple[list[Item], list[Item]]:
    """Take up to ``window`` live items of ``kind`` off the queue's head, with the items of
    other kinds passed over on the way (which go back). Only the head is touched, so cutting
    a batch costs O(window), not O(queue), for a lane of one kind."""
    head: list[Item] = []
    other: list[Item] = []
    while queue and len(head) < window:
        item = queue.popleft()
        if item.request.cancelled:
            continue
        (head if item.request.kind == kind else other).append(item)
    return head, other
