"""The narrow seams between the batcher and its models.

An ``Encoder`` tokenises (any thread) and runs forward passes (only ever on its device's
model threads, one pass at a time: ``turns.py``; ``model.devices`` loads one encoder per
device). Everything above it (batcher,
API, follower, search) is tested with a deterministic fake that implements this protocol;
the real model sits in ``encoder.py``.
A ``Reranker`` (optional, ``reranker.py``) has the same two halves for (query, document)
pairs, so its pairs queue in the same lanes and run on the same model threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from es_embed.embed.shape import ModelShape

Lane = Literal["query", "bulk"]
InputType = Literal["query", "document"]
RerankerFamily = Literal["qwen3", "cross-encoder"]
ModelKind = Literal["embed", "rerank"]  # which model a queued input goes to


@dataclass(frozen=True)
class ModelInfo:
    model_id: str  # the id the API serves
    hidden_size: int  # full output dimension
    max_length: int  # effective token limit per input (config capped by the model's)
    device: str
    dtype: str
    pooling: Literal["lasttoken", "mean", "cls"]
    matryoshka_dims: tuple[int, ...] | None = None  # declared valid dims, if the model lists them
    query_prompt: str | None = None  # from config_sentence_transformers.json, if any
    matryoshka: bool = False  # trained for truncation (see embed/shape.py)
    special_tokens: int = 0  # added around every input's content (a passage's budget)

    @property
    def shape(self) -> ModelShape:
        return ModelShape(
            self.model_id, self.hidden_size, self.matryoshka, self.matryoshka_dims, self.max_length
        )


@dataclass(frozen=True)
class RerankerInfo:
    model_id: str  # the id /v1/rerank serves
    family: RerankerFamily  # how pairs are formatted and scored
    max_length: int  # effective token limit per pair, prompt included
    device: str
    dtype: str

    @property
    def takes_instruction(self) -> bool:
        return self.family == "qwen3"


@dataclass(frozen=True)
class Tokenized:
    ids: tuple[int, ...]  # already cut to max_length, special tokens included
    original_length: int  # tokens before cutting
    type_ids: tuple[int, ...] | None = None  # segment ids of a pair, for models that read them

    @property
    def truncated(self) -> bool:
        return self.original_length > len(self.ids)


@dataclass(frozen=True)
class Spans:
    """A text's content tokens (no special tokens, nothing cut) and where each one sits:
    ``offsets[i]`` is the character range ``[start, end)`` of ``ids[i]`` in the text."""

    ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]


class Encoder(Protocol):
    @property
    def info(self) -> ModelInfo: ...

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        """Thread-safe; called off the event loop, never on the model thread."""
        ...

    def spans(self, texts: Sequence[str]) -> list[Spans]:
        """Thread-safe; the tokens of each text with their character offsets (passages are
        cut from these, so their lengths are the model's own)."""
        ...

    def wrap(self, ids: Sequence[int]) -> Tokenized:
        """Content ids (e.g. a slice of ``spans``) with the special tokens added, cut to
        ``max_length`` as ``tokenize`` would cut the text."""
        ...

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        """Pad, run the model, pool. Returns float32 [len(batch), hidden_size], L2-normalised.

        Called only on its device's model threads, one pass running at a time; a bulk
        pass may be paused mid-way (``turns.py``) while a query's pass runs, so a pass keeps
        its state in locals, not on the encoder. Raises on any model failure (including
        non-finite output); the batcher turns that into 503s and an unhealthy /health.
        """
        ...


class Reranker(Protocol):
    @property
    def info(self) -> RerankerInfo: ...

    def tokenize_pairs(
        self, query: str, documents: Sequence[str], instruction: str | None = None
    ) -> list[Tokenized]:
        """One input per document, in order; thread-safe, never called on the model thread.

        ``instruction`` (families that take one) replaces the configured one.
        """
        ...

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        """Run the model on pairs. Returns float32 [len(batch)] relevance scores.

        Called only on its device's query thread; raises on any model failure, as
        ``Encoder.forward``.
        """
        ...
