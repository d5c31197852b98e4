"""The two lanes in front of the models: admission, batch cutting and the bulk hold.

Each device takes work from both lanes at once, on one model thread per lane, and its bulk
pass stands aside for a query at each layer boundary (``turns.py``), so an interactive query
waits for at most one layer of bulk work; and every bulk batch is cut to about
``batching.max_bulk_batch_ms`` of model time on the device that takes it, from that device's
measured speed (``pace.py``, ``speed.py``), so a query on a model without layer hooks waits
little too, even while a back-fill saturates every device. Reranker pairs share the query lane
behind embedding queries, and their batches are cut the same way to
``batching.max_rerank_batch_ms`` at the reranker's own measured speed: a window of 50 long
pairs in one pass could otherwise hold an embedding query for a second on a CPU. A client that
sends its next query right after an answer also finds a device free: bulk work is held for a
few ms after each answered query while queries arrive that way (anticipation). Every batch
fits its device's token budget (``memory.py``), which an out-of-memory error lowers for a
while. Admission is bounded per lane (429 beyond it). This module never runs a model: each
device's loop for a lane asks it for that lane's next batch with the device's pace, runs it,
and reports how long the batch took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from es_embed.config import BatchSettings
from es_embed.embed.batching import Item, Request, cut_batch
from es_embed.embed.pace import Pace
from es_embed.embed.protocol import Lane, ModelKind, Tokenized
from es_embed.errors import EmbedError, overloaded
from es_embed.metrics import Registry

LANES: tuple[Lane, ...] = ("query", "bulk")  # priority order
REJECT_REASONS = ("queue_full",)
# Queued inputs looked at when grouping a batch by length: wide enough that concurrent
# requests of mixed lengths still pad little, small enough to sort on every batch.
SORT_WINDOW = 256


class Lanes:
    def __init__(self, batching: BatchSettings, registry: Registry, devices: int = 1) -> None:
        self._batching = batching
        self._queues: dict[Lane, deque[Item]] = {lane: deque() for lane in LANES}
        self._seq = 0
        self._wakeup = asyncio.Event()
        self._query_answered: float | None = None  # when the last query batch came off the model
        # Did the last query arrive within query_anticipation_ms of an answer? Until a client
        # has shown its pace, assume so.
        self._back_to_back = True
        self._bulk_waiting_since = 0.0  # last bulk batch, or when the bulk lane filled
        self.paces = [Pace(batching) for _ in range(devices)]  # one per device, in order
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
            "cut to max_bulk_batch_ms of model time); with several devices, the smallest.",
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

    async def next_batch(
        self, pace: Pace, lane: Lane, busy: Callable[[], bool] = lambda: False
    ) -> list[Item]:
        """Wait for the next batch of ``lane`` cut for the device of ``pace`` (bulk work once
        its hold is over). Every device's free loop for that lane waits here; each batch goes
        to one of them, first to a device that is not ``busy`` with its other lane's pass."""
        while True:
            if busy():  # one turn of the event loop: the other devices woken with it pick first
                await asyncio.sleep(0)
            batch = self._pick(pace, lane)
            if batch:
                if lane == "bulk":
                    self._bulk_waiting_since = time.monotonic()
                self._update_depth()
                return batch
            self._wakeup.clear()
            hold = self._bulk_hold()
            with contextlib.suppress(TimeoutError):  # the hold is over: bulk work may go
                await asyncio.wait_for(self._wakeup.wait(), hold if hold > 0 else None)

    def give_back(self, lane: Lane, batch: list[Item]) -> None:
        """Put a batch taken by a device that went out before running it back at the head of
        its lane, in order, for another device."""
        self._queues[lane].extendleft(reversed(batch))
        self._update_depth()
        self._wakeup.set()

    def ran(self, lane: Lane) -> None:
        """A batch of ``lane`` came off a device, whose pace has learnt from it
        (``Pace.ran``): an answered query may start a hold, and the budget gauge follows."""
        if lane == "query":
            self._query_answered = time.monotonic()
        self._update_budget()

    def _update_budget(self) -> None:
        self._m_budget.labels(lane="query").set(min(p.budget.current for p in self.paces))
        self._m_budget.labels(lane="bulk").set(min(p.bulk_budget() for p in self.paces))

    def _update_depth(self) -> None:
        for lane, queue in self._queues.items():
            self._m_queue.labels(lane=lane).set(len(queue))

    def _pick(self, pace: Pace, lane: Lane) -> list[Item]:
        b = self._batching
        if lane == "bulk" and self._bulk_hold() > 0:
            return []
        window = max(4 * b.max_batch_size, SORT_WINDOW)
        # Reranker pairs only ever queue on the query lane.
        rerank: dict[ModelKind, int] = {"rerank": pace.rerank_budget()} if lane == "query" else {}
        queue = self._queues[lane]
        return cut_batch(queue, pace.max_tokens(lane), b.max_batch_size, window, rerank)

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
