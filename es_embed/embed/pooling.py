"""Token states -> one vector per input, honouring the attention mask whatever the padding side.

Padding positions can hold garbage (even NaN: a left-padded row of a causal model attends to
nothing), so masked positions are selected away with ``where``/gathers, never multiplied by
zero. Results are float32 whatever the model's dtype.
"""

from __future__ import annotations

import torch

from es_embed.embed.st_config import Pooling


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """``hidden`` [n, seq, dim], ``mask`` [n, seq] (1 = real token) -> float32 [n, dim]."""
    if pooling == "lasttoken":
        return _gather(hidden, last_token_index(mask))
    if pooling == "cls":
        return _gather(hidden, first_token_index(mask))
    if pooling == "mean":
        keep = mask.bool().unsqueeze(-1)
        total = torch.where(keep, hidden, torch.zeros((), dtype=hidden.dtype, device=hidden.device))
        summed = total.sum(dim=1, dtype=torch.float32)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(torch.float32)
        return summed / count
    raise ValueError(f"unknown pooling {pooling!r}")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last real token (left or right padding)."""
    seq = mask.shape[1]
    from_end = mask.flip(1).to(torch.int32).argmax(dim=1)
    return (seq - 1) - from_end


def first_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's first real token (left or right padding)."""
    return mask.to(torch.int32).argmax(dim=1)


def normalize(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors.to(torch.float32), p=2.0, dim=-1)


def _gather(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, index.to(hidden.device)].to(torch.float32)
