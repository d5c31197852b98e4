"""The two lanes in front of the model: admission, batch cutting and the bulk hold.

The query lane always goes first, so an interactive query waits for at most the batch in
flight; and every bulk batch is cut to about ``batching.max_bulk_batch_ms`` of model time,
from the model's speed measured as it runs (a moving average of forward time per padded
token), so that wait stays short even while a back-fill saturates the model. A faster device
gets larger bulk batches by itself. Reranker pairs share the query lane behind embedding
queries, and their batches are cut the same way to ``batching.max_rerank_batch_ms`` at the
reranker's own measured speed: a window of 50 long pairs in one pass could otherwise hold
an embedding query for a second on a CPU. (Learning from batches that were cut by that
speed converges on batches of the bound: a pass's fixed cost makes the measured time per
token larger for small batches, which shrinks the next ones only until they take the
bound.) A client that sends its next query right after an answer also finds the model free:
bulk work is held for a few ms after each answered query while queries arrive that way
(anticipation). Every batch fits the token budget (``memory.py``),
which an out-of-memory error lowers for a while. Admission is bounded per lane (429 beyond
it). This module never runs the model: the service asks it for the next batch, runs it, and
reports how long the batch took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from es_embed.config import BatchSettings
from es_embed.embed.batching import Item, Request, cut_batch, padded_cost
from es_embed.embed.memory import FIXED_TOKEN_BUDGET, TokenBudget
from es_embed.embed.protocol import Lane, ModelKind, Tokenized
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
        self._query_answered: float | None = None  # when the last query batch came off the model
        # Did the last query arrive within query_anticipation_ms of an answer? Until a client
        # has shown its pace, assume so.
        self._back_to_back = True
        self._bulk_waiting_since = 0.0  # last bulk batch, or when the bulk lane filled
        self._embed_speed = Speed()  # of bulk batches
        self._rerank_speed = Speed()  # of reranker batches
        self.budget = TokenBudget(batching.max_batch_tokens or FIXED_TOKEN_BUDGET)
        self._m_queue = registry.gauge(
            "es_embed_queue_depth", "Inputs waiting, by lane.", ("lane",), known=[LANES]
        )
        self._m_rejected = registry.counter(
            "es_embed_rejected_total",
            "Inputs refused, by lane and reason.",
            ("lane", "reason"),
            known=[LANES, REJECT_REASONS],
        )
        self._m_budget = registry.gauge(
            "es_embed_batch_token_budget",
            "Padded tokens the next batch may hold, by lane (the token budget; for bulk, also "
            "cut to max_bulk_batch_ms of model time).",
            ("lane",),
            known=[LANES],
        )
        self._update_budget()

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
        if lane == "query" and self._query_answered is not None:
            gap = time.monotonic() - self._query_answered
            self._back_to_back = gap <= self._batching.query_anticipation_ms / 1000
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

    def ran(
        self,
        lane: Lane,
        tokens: list[Tokenized],
        seconds: float,
        failed_tokens: int | None = None,
        kind: ModelKind = "embed",
    ) -> None:
        """A batch came off the model: learn its speed and whether it fitted in memory
        (``failed_tokens``: the smallest pass of it that did not); an answered query may start
        a hold."""
        if failed_tokens is not None:
            self.budget.out_of_memory(failed_tokens)
        else:
            self.budget.fitted()
        # Bulk batches and rerank batches only: a lone query's pass is mostly fixed cost and
        # would understate the speed. A batch that was split is not learnt from: its time
        # includes failed passes.
        if failed_tokens is None and kind == "rerank":
            self._rerank_speed.learn(tokens, seconds)
        elif failed_tokens is None and lane == "bulk":
            self._embed_speed.learn(tokens, seconds)
        if lane == "query":
            self._query_answered = time.monotonic()
        self._update_budget()

    @property
    def tokens_per_second(self) -> float:
        """The measured speed of bulk batches (padded tokens per second); 0 until measured."""
        return self._embed_speed.tokens_per_second

    def bulk_budget(self) -> int:
        """Padded tokens of the next bulk batch: the token budget, cut to max_bulk_batch_ms of
        model time at the measured speed (the token budget alone until a pass is measured:
        the service's start-up warm-up measures one)."""
        return self._embed_speed.cut(self.budget.current, self._batching.max_bulk_batch_ms)

    def rerank_budget(self) -> int:
        """Padded tokens of the next rerank batch: the token budget, cut to
        max_rerank_batch_ms at the reranker's measured speed (once a rerank batch ran)."""
        return self._rerank_speed.cut(self.budget.current, self._batching.max_rerank_batch_ms)

    def describe(self, how: str) -> str:
        """The token budget (chosen ``how``) and the bulk bound, as the start-up log says."""
        text = f"token budget {self.budget.current:,} ({how})"
        if self._batching.max_bulk_batch_ms > 0 and self.tokens_per_second > 0:
            text += (
                f"; bulk batches up to {self._batching.max_bulk_batch_ms:g} ms = "
                f"{self.bulk_budget():,} tokens at {self.tokens_per_second:,.0f} tokens/s"
            )
        return text

    def _update_budget(self) -> None:
        self._m_budget.labels(lane="query").set(self.budget.current)
        self._m_budget.labels(lane="bulk").set(self.bulk_budget())

    def _update_depth(self) -> None:
        for lane, queue in self._queues.items():
            self._m_queue.labels(lane=lane).set(len(queue))

    def _pick(self) -> tuple[Lane, list[Item]] | None:
        b = self._batching
        for lane in LANES:
            if lane == "bulk" and self._bulk_hold() > 0:
                return None
            max_tokens = self.bulk_budget() if lane == "bulk" else self.budget.current
            window = max(4 * b.max_batch_size, SORT_WINDOW)
            rerank: dict[ModelKind, int] = {"rerank": self.rerank_budget()}
            batch = cut_batch(self._queues[lane], max_tokens, b.max_batch_size, window, rerank)
            if batch:
                return lane, batch
        return None

    def _bulk_hold(self) -> float:
        """Seconds the bulk lane still waits after a query was answered (0 when it need not).

        A search client usually sends its next query right after an answer; holding bulk
        work for a few ms lets that query find the model free instead of waiting behind a
        bulk batch that started in the gap (anticipatory scheduling). Costs bulk work at
        most ``query_anticipation_ms`` per answered query, and nothing while queries come
        spaced out (their client is not waiting to send the next one).
        """
        if not self._queues["bulk"] or not self._back_to_back or self._query_answered is None:
            return 0.0
        now = time.monotonic()
        ends = min(
            self._query_answered + self._batching.query_anticipation_ms / 1000,
            # A client streaming queries back to back must not starve bulk work.
            self._bulk_waiting_since + self._batching.bulk_max_hold_ms / 1000,
        )
        return max(0.0, ends - now)


class Speed:
    """A model's measured speed: a moving average of forward time per padded token."""

    def __init__(self) -> None:
        self.seconds_per_token = 0.0  # 0 until a batch is measured

    def learn(self, tokens: list[Tokenized], seconds: float) -> None:
        per_token = seconds / padded_cost([len(t.ids) for t in tokens])
        old = self.seconds_per_token
        self.seconds_per_token = per_token if old == 0 else 0.8 * old + 0.2 * per_token

    @property
    def tokens_per_second(self) -> float:
        return 1 / self.seconds_per_token if self.seconds_per_token > 0 else 0.0

    def cut(self, budget: int, bound_ms: float) -> int:
        """``budget``, cut to the padded tokens that take ``bound_ms`` (0: no bound)."""
        if bound_ms > 0 and self.seconds_per_token > 0:
            return min(budget, max(1, int(bound_ms / 1000 / self.seconds_per_token)))
        return budget
