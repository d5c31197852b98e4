"""The two lanes in front of the model: admission, batch cutting and the bulk hold.

The query lane always goes first, so an interactive query waits for at most the batch in
flight. While queries are arriving, bulk batches are also cut short
(``batching.interactive_bulk_ms``) so that wait stays small even when a back-fill saturates
the model, and bulk work is held for a few ms after each answered query (anticipation).
Admission is bounded per lane (429 beyond it). This module never runs the model: the
service asks it for the next batch, runs it, and reports how long the batch took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from es_embed.config import BatchSettings
from es_embed.embed.batching import Item, Request, cut_batch, padded_cost
from es_embed.embed.protocol import Lane, Tokenized
from es_embed.errors import EmbedError, overloaded
from es_embed.metrics import Registry

LANES: tuple[Lane, ...] = ("query", "bulk")  # priority order
REJECT_REASONS = ("queue_full",)
# Queued inputs looked at when grouping a batch by length: wide enough that concurrent
# requests of mixed lengths still pad little, small enough to sort on every batch.
SORT_WINDOW = 256


class Lanes:
    def __init__(self, batching: BatchSettings, registry: Registry) -> None:
        self._batching = batching
        self._queues: dict[Lane, deque[Item]] = {lane: deque() for lane in LANES}
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._last_query = -1e9
        self._query_answered = -1e9  # when the last query batch came off the model
        self._bulk_waiting_since = 0.0  # last bulk batch, or when the bulk lane filled
        self._seconds_per_token = 0.0  # moving average of forward time per padded token
        self._m_queue = registry.gauge(
            "es_embed_queue_depth", "Inputs waiting, by lane.", ("lane",), known=[LANES]
        )
        self._m_rejected = registry.counter(
            "es_embed_rejected_total",
            "Inputs refused, by lane and reason.",
            ("lane", "reason"),
            known=[LANES, REJECT_REASONS],
        )

    def pending(self) -> bool:
        return any(self._queues.values())

    def admit(self, lane: Lane, n: int) -> None:
        """Refuse ``n`` more inputs on a full lane (429); an empty lane takes any request."""
        limit = self._batching.query_queue if lane == "query" else self._batching.bulk_queue
        queued = len(self._queues[lane])
        # An oversized request is still admitted into an empty lane, so it cannot starve.
        if queued and queued + n > limit:
            self._m_rejected.labels(lane=lane, reason="queue_full").inc(n)
            raise overloaded(lane, self._batching.retry_after_seconds)

    def enqueue(self, lane: Lane, request: Request, tokens: list[Tokenized]) -> None:
        if lane == "query":
            self._last_query = time.monotonic()
        queue = self._queues[lane]
        if lane == "bulk" and not queue:
            self._bulk_waiting_since = time.monotonic()
        for i, tok in enumerate(tokens):
            self._seq += 1
            queue.append(Item(request, i, tok, self._seq))
        self._update_depth()
        self._wakeup.set()

    def withdraw(self, lane: Lane, request: Request) -> None:
        """Drop a cancelled request's queued inputs at once: they no longer count as queued."""
        request.cancelled = True
        queue = self._queues[lane]
        kept = [item for item in queue if item.request is not request]
        queue.clear()
        queue.extend(kept)
        self._update_depth()

    def fail_all(self, error: EmbedError) -> None:
        for queue in self._queues.values():
            for item in queue:
                if not item.request.future.done():
                    item.request.future.set_exception(error)
            queue.clear()
        self._update_depth()

    async def next_batch(self) -> tuple[Lane, list[Item]]:
        """Wait for the next batch: query work first, bulk work once its hold is over."""
        while True:
            picked = self._pick()
            if picked is not None:
                if picked[0] == "bulk":
                    self._bulk_waiting_since = time.monotonic()
                self._update_depth()
                return picked
            self._wakeup.clear()
            hold = self._bulk_hold()
            with contextlib.suppress(TimeoutError):  # the hold is over: bulk work may go
                await asyncio.wait_for(self._wakeup.wait(), hold if hold > 0 else None)

    def ran(self, lane: Lane, tokens: list[Tokenized], seconds: float, learn: bool = True) -> None:
        """A batch came off the model: learn its speed (``learn``: a batch of the model that
        runs bulk work, whose budget the speed sets); an answered query starts a hold."""
        if learn:
            per_token = seconds / padded_cost([len(t.ids) for t in tokens])
            self._seconds_per_token = (
                per_token
                if self._seconds_per_token == 0
                else 0.8 * self._seconds_per_token + 0.2 * per_token
            )
        if lane == "query":
            self._query_answered = time.monotonic()

    def _update_depth(self) -> None:
        for lane, queue in self._queues.items():
            self._m_queue.labels(lane=lane).set(len(queue))

    def _pick(self) -> tuple[Lane, list[Item]] | None:
        b = self._batching
        for lane in LANES:
            if lane == "bulk" and self._bulk_hold() > 0:
                return None
            max_tokens = b.max_batch_tokens
            if lane == "bulk" and self._interactive():
                max_tokens = self._interactive_budget()
            window = max(4 * b.max_batch_size, SORT_WINDOW)
            batch = cut_batch(self._queues[lane], max_tokens, b.max_batch_size, window)
            if batch:
                return lane, batch
        return None

    def _bulk_hold(self) -> float:
        """Seconds the bulk lane still waits after a query was answered (0 when it need not).

        A search client usually sends its next query right after an answer; holding bulk
        work for a few ms lets that query find the model free instead of waiting behind a
        bulk batch that started in the gap (anticipatory scheduling). Costs bulk work at
        most ``query_anticipation_ms`` per answered query.
        """
        if not self._queues["bulk"]:
            return 0.0
        now = time.monotonic()
        ends = min(
            self._query_answered + self._batching.query_anticipation_ms / 1000,
            # A client streaming queries back to back must not starve bulk work.
            self._bulk_waiting_since + self._batching.bulk_max_hold_ms / 1000,
        )
        return max(0.0, ends - now)

    def _interactive(self) -> bool:
        return time.monotonic() - self._last_query < self._batching.interactive_window_seconds

    def _interactive_budget(self) -> int:
        """Padded tokens that fit in interactive_bulk_ms, from the measured forward speed."""
        if self._seconds_per_token <= 0:
            return self._batching.max_batch_tokens
        budget = self._batching.interactive_bulk_ms / 1000 / self._seconds_per_token
        return max(1, min(self._batching.max_batch_tokens, int(budget)))
