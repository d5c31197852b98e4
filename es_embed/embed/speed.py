"""How long a forward pass takes, learnt as the model runs: a fixed cost per pass plus a cost
per padded token.

Two parts, because a pass has a fixed cost (Python, kernel launches, the hand-off to the
model thread) that does not shrink with the batch. Counted as token cost, it makes a batch cut
to a time bound look slower per token than it is; where it is a large share of the bound (a
small model, a busy CPU), bulk batches shrink to a few inputs and a back-fill spends its time
in fixed costs. So a bulk batch is the larger of what fits the time bound and the size at
which the fixed cost is at most half of the pass (``EFFICIENCY``): a query then waits for at
most one layer of a pass of ``max(bound, 2 x fixed cost)`` (``turns.py``; all of it, on a
model without layer hooks), and bulk work never spends more time on fixed costs than on
tokens. A stricter efficiency would grow bulk batches on a busy CPU, where the fixed cost
looks large, by as much as it lengthens every query's wait.
"""

from __future__ import annotations

from dataclasses import dataclass

EFFICIENCY = 0.5  # least share of a bulk pass spent on tokens rather than on its fixed cost
# Least share of a bulk pass taken as token time when learning: a fixed cost learnt on a busier
# moment may exceed a whole pass, and its tokens still cost something.
LEAST_TOKEN_SHARE = 0.1
SMOOTHING = 0.2  # weight of the newest pass in the moving averages


def _average(old: float, new: float) -> float:
    return new if old == 0 else (1 - SMOOTHING) * old + SMOOTHING * new


@dataclass
class PassSpeed:
    fixed: float = 0.0  # seconds per pass whatever its size, from lone queries
    per_token: float = 0.0  # seconds per padded token beyond that, from bulk batches

    def learn_fixed(self, padded_tokens: int, seconds: float) -> None:
        """A pass of a lone short input: mostly fixed cost."""
        self.fixed = _average(self.fixed, max(0.0, seconds - self.per_token * padded_tokens))

    def learn_tokens(self, padded_tokens: int, seconds: float) -> None:
        """A full batch: mostly token cost."""
        token_seconds = max(seconds - self.fixed, LEAST_TOKEN_SHARE * seconds)
        self.per_token = _average(self.per_token, token_seconds / padded_tokens)

    @property
    def tokens_per_second(self) -> float:
        """Padded tokens per second of token work; 0 until a bulk pass is measured."""
        return 1 / self.per_token if self.per_token > 0 else 0.0

    def tokens_within(self, bound_ms: float) -> int | None:
        """Padded tokens of a batch that takes about ``bound_ms``, or more where the fixed
        cost would otherwise pass half of it; None until a bulk pass is measured."""
        if self.per_token <= 0:
            return None
        within_bound = bound_ms / 1000 - self.fixed
        efficient = self.fixed * EFFICIENCY / (1 - EFFICIENCY)
        return max(1, int(max(within_bound, efficient) / self.per_token))
