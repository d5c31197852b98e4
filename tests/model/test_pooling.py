"""Pooling on hand-made token states: the mask decides, whatever the padding side."""

from __future__ import annotations

import math

import torch

from es_embed.embed.pooling import normalize, pool


def states(rows: list[list[float]]) -> torch.Tensor:
    """[n, seq] values -> [n, seq, 2] states whose first component is the value."""
    values = torch.tensor(rows, dtype=torch.float32)
    return torch.stack([values, torch.full_like(values, 1.0)], dim=-1)


def test_last_token_with_left_padding_reads_the_last_column() -> None:
    hidden = states([[9.0, 9.0, 1.0, 2.0], [3.0, 4.0, 5.0, 6.0]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, mask, "lasttoken")[:, 0].tolist() == [2.0, 6.0]


def test_last_token_with_right_padding_reads_the_last_real_token() -> None:
    hidden = states([[1.0, 2.0, 9.0, 9.0], [3.0, 4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pool(hidden, mask, "lasttoken")[:, 0].tolist() == [2.0, 6.0]


def test_mean_ignores_padding_even_when_it_holds_nan() -> None:
    # A fully masked (padded) position of a causal model can come out as NaN; it must not
    # leak into the mean the way multiplying by a zero mask would let it.
    hidden = states([[math.nan, 2.0, 4.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    pooled = pool(hidden, mask, "mean")
    assert pooled[:, 0].tolist() == [3.0, 2.0]
    assert torch.isfinite(pooled).all()


def test_mean_with_right_padding_divides_by_real_tokens_only() -> None:
    hidden = states([[2.0, 4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0, 0]])
    assert pool(hidden, mask, "mean")[0, 0].item() == 3.0


def test_cls_reads_the_first_real_token_on_either_side() -> None:
    hidden = states([[7.0, 1.0, 2.0], [9.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert pool(hidden, mask, "cls")[:, 0].tolist() == [7.0, 5.0]


def test_pooling_returns_float32_from_bfloat16_states() -> None:
    hidden = states([[1.0, 2.0]]).to(torch.bfloat16)
    mask = torch.tensor([[1, 1]])
    for mode in ("lasttoken", "mean", "cls"):
        assert pool(hidden, mask, mode).dtype == torch.float32  # type: ignore[arg-type]


def test_normalize_gives_unit_rows() -> None:
    vectors = normalize(torch.tensor([[3.0, 4.0], [0.5, 0.0]]))
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2))
    assert vectors[0].tolist() == [0.6000000238418579, 0.800000011920929]
