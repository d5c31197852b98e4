"""Queue entries and batch formation: pure logic, no threads, no event loop.

A batch is cut by a token budget counted the way the accelerator pays for it (longest
input x count, since the batch is padded) and by a count cap. To waste little on padding,
the batch is built around the *oldest* queued input from its neighbours in length within a
window of the queue head: grouping by length without ever starving the oldest input.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from es_embed.embed.protocol import Tokenized


@dataclass(eq=False)
class Request:
    """One caller's inputs; completed when every item has its vector."""

    size: int
    future: Any  # asyncio.Future[np.ndarray]; Any keeps this module loop-free
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


def cut_batch(queue: deque[Item], max_tokens: int, max_size: int, window: int) -> list[Item]:
    """Remove and return the next batch from ``queue`` (oldest first; never empty if queue isn't).

    Items of cancelled requests are dropped here, before they reach the model.
    """
    while queue and queue[0].request.cancelled:
        queue.popleft()
    if not queue:
        return []
    # Only the head window is touched, so cutting a batch costs O(window), not O(queue).
    head = [queue.popleft() for _ in range(min(window, len(queue)))]
    head = [it for it in head if not it.request.cancelled]
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
    rest = head[:lo] + head[hi + 1 :]
    rest.sort(key=lambda it: it.seq)  # back in arrival order, ahead of the untouched tail
    queue.extendleft(reversed(rest))
    return chosen
