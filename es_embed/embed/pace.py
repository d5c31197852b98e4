"""One device's pace: how many padded tokens its next batch may hold, learnt as it runs.

Each device (``model.devices``: one model replica each) has its own: a token budget that an
out-of-memory error on that device lowers for a while (``memory.py``), and a moving average
of its bulk forward time per padded token, from which every bulk batch it takes is cut to
about ``batching.max_bulk_batch_ms`` of model time. A faster device gets larger bulk
batches by itself, and a device that ran out of memory does not shrink the others' batches.

Pure: no threads, no event loop; the lanes ask it how large a batch may be, the service
tells it how each batch went.
"""

from __future__ import annotations

from es_embed.config import BatchSettings
from es_embed.embed.batching import padded_cost
from es_embed.embed.memory import FIXED_TOKEN_BUDGET, TokenBudget
from es_embed.embed.protocol import Lane, Tokenized


class Pace:
    def __init__(self, batching: BatchSettings) -> None:
        self._bound_ms = batching.max_bulk_batch_ms
        self._seconds_per_token = 0.0  # moving average of bulk forward time per padded token
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
        # Bulk batches only: a lone query's pass is mostly fixed cost and would understate the
        # speed. A batch that was split is not learnt from: its time includes failed passes.
        if lane == "bulk" and failed_tokens is None:
            per_token = seconds / padded_cost([len(t.ids) for t in tokens])
            self._seconds_per_token = (
                per_token
                if self._seconds_per_token == 0
                else 0.8 * self._seconds_per_token + 0.2 * per_token
            )

    @property
    def tokens_per_second(self) -> float:
        """The measured speed of bulk batches (padded tokens per second); 0 until measured."""
        return 1 / self._seconds_per_token if self._seconds_per_token > 0 else 0.0

    def max_tokens(self, lane: Lane) -> int:
        """Padded tokens the next batch of ``lane`` may hold on this device."""
        return self.bulk_budget() if lane == "bulk" else self.budget.current

    def bulk_budget(self) -> int:
        """Padded tokens of the next bulk batch: the token budget, cut to max_bulk_batch_ms of
        model time at the measured speed (the token budget alone until a pass is measured:
        the service's start-up warm-up measures one)."""
        budget = self.budget.current
        if self._bound_ms > 0 and self._seconds_per_token > 0:
            budget = min(budget, max(1, int(self._bound_ms / 1000 / self._seconds_per_token)))
        return budget

    def describe(self, how: str) -> str:
        """The token budget (chosen ``how``) and the bulk bound, as the start-up log says."""
        text = f"token budget {self.budget.current:,} ({how})"
        if self._bound_ms > 0 and self._seconds_per_token > 0:
            text += (
                f"; bulk batches up to {self._bound_ms:g} ms = "
                f"{self.bulk_budget():,} tokens at {self.tokens_per_second:,.0f} tokens/s"
            )
        return text
