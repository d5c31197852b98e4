"""What one forward pass may hold in memory, and what happens when it does not fit.

``TokenBudget`` is the most padded tokens one pass may hold: a ceiling (``max_batch_tokens``,
or what free accelerator memory holds), halved below a pass that ran out of memory, then won
back gradually. ``forward_in_parts`` runs a batch and, when the model runs out of memory,
splits it in halves and runs those instead, so a request that fits alone never fails; an
input that cannot fit even alone comes back as ``None`` for the caller to refuse (413).

Pure: no torch, no threads, no event loop. torch's out-of-memory errors are recognised by
type name and message, so this module never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from es_embed.embed.batching import Item, padded_cost
from es_embed.embed.protocol import Tokenized
from es_embed.errors import EmbedError, ErrorKind

# Lower-cased fragments of the allocation failures torch and its backends raise as plain
# RuntimeErrors: CUDA/HIP/MPS ("... out of memory"), cuBLAS/cuDNN workspaces, the CPU allocator.
OOM_MESSAGES = (
    "out of memory",
    "alloc_failed",
    "defaultcpuallocator: can't allocate memory",
    "defaultcpuallocator: not enough memory",
)
# Passes that must fit in a row before a lowered budget grows again, and by how much: slow
# enough that a device which really cannot hold the old budget fails rarely (one pass in
# several hundred), fast enough that a one-off spike (another process, fragmentation) is
# forgotten within minutes of steady work.
# The budget where none is configured and device memory is not measured (CPU, MPS).
FIXED_TOKEN_BUDGET = 16384
RECOVERY_PASSES = 100
RECOVERY_STEP = 0.25


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure, not a broken model: the batch may fit once it is smaller.

    Matches ``MemoryError`` (host allocation; encoders raise it, or a subclass, to say a batch
    did not fit), ``torch.OutOfMemoryError`` / ``torch.cuda.OutOfMemoryError`` and the
    RuntimeErrors torch raises for MPS, HIP, cuBLAS and CPU allocation failures.
    """
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in OOM_MESSAGES)


class TokenBudget:
    """Padded tokens one pass may hold: halved below a pass that did not fit, then grown
    back by a quarter after each ``RECOVERY_PASSES`` passes in a row that fit, up to the
    ceiling (multiplicative decrease, slow increase)."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling)
        self.current = self.ceiling
        self._fitted = 0

    def set_ceiling(self, ceiling: int) -> None:
        """A new ceiling (start-up sizes it from free memory); the budget starts there."""
        self.ceiling = self.current = max(1, ceiling)
        self._fitted = 0

    def out_of_memory(self, padded_tokens: int) -> None:
        """A pass of ``padded_tokens`` did not fit.

        A pass above the budget can only be one input longer than the budget (it goes alone,
        whatever its size): its failure says nothing of the batches the budget allows, so it
        does not lower the budget again. Otherwise each retry of a document too large for the
        device (the follower takes it again alone, and on every page read again) would halve
        the budget once more and shrink every bulk batch for hundreds of passes.
        """
        if padded_tokens > self.current:
            return
        self.current = max(1, padded_tokens // 2)
        self._fitted = 0

    def fitted(self) -> None:
        """A pass ran without running out of memory."""
        if self.current >= self.ceiling:
            return
        self._fitted += 1
        if self._fitted >= RECOVERY_PASSES:
            grown = self.current + max(1, int(self.current * RECOVERY_STEP))
            self.current = min(self.ceiling, grown)
            self._fitted = 0


@dataclass
class Parts:
    """What ``forward_in_parts`` made of one batch."""

    rows: list[np.ndarray | None]  # one per input, in order; None: does not fit even alone
    splits: int = 0  # halvings
    failed_tokens: int | None = None  # padded tokens of the smallest pass that did not fit


def forward_in_parts(
    forward: Callable[[list[Tokenized]], np.ndarray], batch: Sequence[Tokenized]
) -> Parts:
    """Run ``batch``; on an out-of-memory error split it in halves and run those, down to
    single inputs. Any other error propagates (a broken model is not a memory problem).

    A part at least as large (in padded tokens) as one that already failed is split before
    it is tried: on a GPU a failed pass costs as much time as a successful one.
    """
    parts = Parts(rows=[None] * len(batch))
    pending: list[tuple[int, list[Tokenized]]] = [(0, list(batch))]  # (offset, inputs)
    while pending:
        offset, part = pending.pop()
        cost = padded_cost([len(t.ids) for t in part])
        fits = parts.failed_tokens is None or cost < parts.failed_tokens or len(part) == 1
        if fits and (rows := _try(forward, part)) is not None:
            parts.rows[offset : offset + len(part)] = list(rows)
            continue
        if fits:
            parts.failed_tokens = min(cost, parts.failed_tokens or cost)
        if len(part) == 1:
            continue  # does not fit even alone: left as None
        parts.splits += 1
        half = len(part) // 2
        # Second half first onto the stack, so the first half runs first (inputs in order).
        pending += [(offset + half, part[half:]), (offset, part[:half])]
    return parts


def _try(
    forward: Callable[[list[Tokenized]], np.ndarray], part: list[Tokenized]
) -> np.ndarray | None:
    """The pass's output, or None when it ran out of memory. The retry happens after this
    returns, outside the ``except`` clause, so the failed pass's tensors (held by the
    traceback) are freed before the halves allocate theirs."""
    try:
        return forward(part)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        return None


def too_large_for_memory(item: Item, device: str) -> EmbedError:
    """The refusal of an input that ran out of memory alone: 413 naming it and its size."""
    rerank = item.request.kind == "rerank"
    field, limit = ("documents", "reranker") if rerank else ("input", "model")
    return EmbedError(
        ErrorKind.TOO_LARGE,
        f"{field}[{item.index}] has {item.length} tokens, more than the {limit}'s memory holds "
        f"in one forward pass even alone (on {device}); shorten it or lower {limit}.max_length",
        param=f"{field}[{item.index}]",
        code="input_too_large_for_memory",
    )
