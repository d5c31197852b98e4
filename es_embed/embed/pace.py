"""One device's pace: how many padded tokens its next batch may hold, learnt as it runs.

Each device (``model.devices``: one model replica each) has its own: a token budget that an
out-of-memory error on that device lowers for a while (``memory.py``), and a moving average
of its forward time (``speed.py``: a fixed cost per pass plus a cost per padded token), from
which every bulk batch it takes is cut to about ``batching.max_bulk_batch_ms`` of model time,
never so small that the fixed cost eats the back-fill. A faster device gets larger bulk
batches by itself, and a device that ran out of memory does not shrink the others' batches.

Pure: no threads, no event loop; the lanes ask it how large a batch may be, the service
tells it how each batch went.
"""

from __future__ import annotations

from es_embed.config import BatchSettings
from es_embed.embed.batching import padded_cost
from es_embed.embed.memory import FIXED_TOKEN_BUDGET, TokenBudget
from es_embed.embed.protocol import Lane, ModelKind, Tokenized
from es_embed.embed.speed import PassSpeed


class Pace:
    def __init__(self, batching: BatchSettings) -> None:
        self._bound_ms = batching.max_bulk_batch_ms
        self._rerank_bound_ms = batching.max_rerank_batch_ms
        self.speed = PassSpeed()  # the embedder's, from every pass that fitted in memory
        self.rerank_speed = PassSpeed()  # the reranker's, from its batches
        self.budget = TokenBudget(batching.max_batch_tokens or FIXED_TOKEN_BUDGET)

    def ran(
        self,
        lane: Lane,
        tokens: list[Tokenized],
        seconds: float,
        failed_tokens: int | None = None,
        kind: ModelKind = "embed",
    ) -> None:
        """A batch came off this device: learn its speed and whether it fitted in memory
        (``failed_tokens``: the smallest pass of it that did not)."""
        if failed_tokens is not None:
            self.budget.out_of_memory(failed_tokens)
        else:
            self.budget.fitted()
            self._learn(lane, kind, tokens, seconds)

    def _learn(self, lane: Lane, kind: ModelKind, tokens: list[Tokenized], seconds: float) -> None:
        """A batch that fitted (one that was split is not learnt from: its time includes
        failed passes). A lone query is mostly the embedder's fixed cost, a bulk batch mostly
        its token cost; a batch of several queries teaches neither well. Reranker batches
        teach the reranker's token cost (its fixed cost is not tracked: its batches are
        bounded for a query's wait, and a rerank is one request, not a back-fill)."""
        padded = padded_cost([len(t.ids) for t in tokens])
        if kind == "rerank":
            self.rerank_speed.learn_tokens(padded, seconds)
        elif lane == "bulk":
            self.speed.learn_tokens(padded, seconds)
        elif len(tokens) == 1:
            self.speed.learn_fixed(padded, seconds)

    @property
    def tokens_per_second(self) -> float:
        """The measured speed of token work (padded tokens per second); 0 until measured."""
        return self.speed.tokens_per_second

    def max_tokens(self, lane: Lane) -> int:
        """Padded tokens the next batch of ``lane`` may hold on this device."""
        return self.bulk_budget() if lane == "bulk" else self.budget.current

    def bulk_budget(self) -> int:
        """Padded tokens of the next bulk batch: the token budget, cut to about
        max_bulk_batch_ms of model time at the measured speed (the token budget alone until a
        pass is measured: the service's start-up warm-up measures one)."""
        return self._within(self.speed, self._bound_ms)

    def rerank_budget(self) -> int:
        """Padded tokens of the next reranker batch: the token budget, cut to
        max_rerank_batch_ms at the reranker's measured speed (once a rerank batch ran), so an
        embedding query behind it waits at most that."""
        return self._within(self.rerank_speed, self._rerank_bound_ms)

    def _within(self, speed: PassSpeed, bound_ms: float) -> int:
        timed = speed.tokens_within(bound_ms) if bound_ms > 0 else None
        return self.budget.current if timed is None else min(self.budget.current, timed)

    def describe(self, how: str) -> str:
        """The token budget (chosen ``how``) and the bulk bound, as the start-up log says."""
        text = f"token budget {self.budget.current:,} ({how})"
        if self._bound_ms > 0 and self.speed.per_token > 0:
            text += (
                f"; bulk batches up to {self._bound_ms:g} ms = {self.bulk_budget():,} tokens "
                f"at {self.tokens_per_second:,.0f} tokens/s "
                f"(+{self.speed.fixed * 1000:.1f} ms per pass)"
            )
        return text
