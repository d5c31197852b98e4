"""A deterministic fake encoder behind the ``Encoder`` protocol, for tests above the model.

Words hash to fixed random vectors and a text's vector is their normalised sum, so texts
sharing words are close: enough for retrieval tests without a model. It counts calls,
can simulate compute time, and can be told to fail (to test 503s and recovery).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Sequence

import numpy as np

from es_embed.embed.protocol import ModelInfo, Spans, Tokenized
from es_embed.embed.shape import ModelShape

WORD = re.compile(r"\w+", re.UNICODE)


class FakeEncoder:
    def __init__(
        self,
        hidden_size: int = 64,
        max_length: int = 512,
        seconds_per_token: float = 0.0,
        model_id: str = "fake-encoder",
    ) -> None:
        self._info = ModelInfo(
            model_id=model_id,
            hidden_size=hidden_size,
            max_length=max_length,
            device="cpu",
            dtype="float32",
            pooling="mean",
            matryoshka=True,  # the fake's vectors are prefixes of one long hash stream
        )
        self.seconds_per_token = seconds_per_token
        self.forward_calls = 0
        self.encoded_inputs = 0
        self.batches: list[int] = []  # batch sizes, in order
        self.failure: BaseException | None = None  # raised by every forward() while set
        self._lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return self._info

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        return [self.wrap(s.ids) for s in self.spans(texts)]

    def spans(self, texts: Sequence[str]) -> list[Spans]:
        """One token per word (``\\w+``), with its character offsets."""
        out = []
        for text in texts:
            words = list(WORD.finditer(text))
            ids = tuple(self._word_id(m.group().lower()) for m in words)
            out.append(Spans(ids, tuple(m.span() for m in words)))
        return out

    def wrap(self, ids: Sequence[int]) -> Tokenized:
        full = [*ids] or [0]
        full.append(1)  # an end-of-text token, as Qwen3's tokenizer appends
        cut = full[: self._info.max_length]
        return Tokenized(ids=tuple(cut), original_length=len(full))

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if self.failure is not None:
            raise self.failure
        padded = max(len(t.ids) for t in batch) * len(batch)
        if self.seconds_per_token:
            time.sleep(padded * self.seconds_per_token)
        with self._lock:
            self.forward_calls += 1
            self.encoded_inputs += len(batch)
            self.batches.append(len(batch))
        vectors = np.stack([self._vector(t.ids) for t in batch]).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    @staticmethod
    def _word_id(word: str) -> int:
        return 2 + int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "little")

    def _vector(self, ids: Sequence[int]) -> np.ndarray:
        total = np.zeros(self._info.hidden_size, dtype=np.float64)
        for i in ids:
            total += np.random.default_rng(i).standard_normal(self._info.hidden_size)
        return total


class GatedEncoder(FakeEncoder):
    """forward() records its batch's token lengths, sets ``entered``, then blocks until the
    test sets ``gate`` (or ``timeout`` seconds pass, so a failing test cannot hang)."""

    def __init__(self, timeout: float = 10.0) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.seen: list[list[int]] = []
        self._timeout = timeout

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        self.seen.append([len(t.ids) for t in batch])
        self.entered.set()
        self.gate.wait(self._timeout)
        return super().forward(batch)


# For setup tests that give every index explicit dims: a wide Matryoshka model accepts them.
ANY_SHAPE = ModelShape("fake-encoder", 4096, matryoshka=True)
