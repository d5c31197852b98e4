"""What the embedding service hands back: vectors (Matryoshka-truncated, unit length) and
reranker scores, each with the token counts the API reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [n, dims], unit length
    prompt_tokens: int
    truncated: int


@dataclass(frozen=True)
class Reranked:
    scores: np.ndarray  # float32 [n], in the order of the documents given
    total_tokens: int
    truncated: int


def truncate_and_normalize(vectors: np.ndarray, dims: int) -> np.ndarray:
    """Matryoshka: keep the first ``dims`` components, then rescale to unit length."""
    cut = np.asarray(vectors[:, :dims], dtype=np.float32)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return cut / np.maximum(norms, np.finfo(np.float32).tiny)
