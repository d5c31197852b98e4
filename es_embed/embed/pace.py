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
from es_embed.embed.protocol import Lane, Tokenized
from es_embed.embed.speed import PassSpeed


class Pace:
    def __init__(self, batching: BatchSettings) -> None:
        self._bound_ms = batching.max_bulk_batch_ms
        self.speed = PassSpeed()  # learnt from every pass that fitted in memory
        self.budget = TokenBudget(batching.max_batch_tokens or FIXED_TOKEN_BUDGET)

    def ran(
        self, lane: Lane, tokens: list[Tokenized], seconds: float, failed_tokens: int | None = None
    ) -> None:
        """A batch came off this device: learn its speed and whether it fitted in memory
        (``failed_tokens``: the smallest pass of it that did not)."""
        if failed_tokens is not None:
            self.budget.out_of_memory(failed_tokens)
        else:
            self.budget.fitted()
            # A batch that was split is not learnt from: its time includes failed passes.
            self.speed.learn(lane, len(tokens), padded_cost([len(t.ids) for t in tokens]), seconds)

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
        timed = self.speed.bulk_tokens(self._bound_ms) if self._bound_ms > 0 else None
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
