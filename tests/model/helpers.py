"""Small helpers shared by the model tests."""

from __future__ import annotations

import numpy as np

from es_embed.embed.encoder import HFEncoder


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two equally shaped matrices."""
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def encode(encoder: HFEncoder, texts: list[str]) -> np.ndarray:
    """Tokenise and run one forward pass, as the batcher does."""
    return encoder.forward(encoder.tokenize(texts))
