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

from es_embed.embed.protocol import ModelInfo, RerankerFamily, RerankerInfo, Tokenized
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
        out = []
        for text in texts:
            ids = [self._word_id(w) for w in WORD.findall(text.lower())] or [0]
            ids.append(1)  # an end-of-text token, as Qwen3's tokenizer appends
            cut = ids[: self.info.max_length]
            out.append(Tokenized(ids=tuple(cut), original_length=len(ids)))
        return out

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


class FakeReranker:
    """A deterministic reranker behind the ``Reranker`` protocol: a pair scores the share of
    the query's distinct words that the document contains (0..1), so a test can predict the
    ranking. Tokens: the query's words (an instruction's first), a separator, the document's
    words, a separator; cut at ``max_length`` (a cut document loses words). Records batch
    sizes, can simulate compute time and can be told to fail, as FakeEncoder."""

    SEPARATOR = 1

    def __init__(
        self,
        max_length: int = 64,
        family: RerankerFamily = "qwen3",
        model_id: str = "fake-reranker",
        seconds_per_token: float = 0.0,
    ) -> None:
        self.info = RerankerInfo(model_id, family, max_length, "cpu", "float32")
        self.seconds_per_token = seconds_per_token
        self.batches: list[int] = []
        self.failure: BaseException | None = None

    def tokenize_pairs(
        self, query: str, documents: Sequence[str], instruction: str | None = None
    ) -> list[Tokenized]:
        words = WORD.findall(f"{instruction or ''} {query}".lower())
        head = (*(FakeEncoder._word_id(w) for w in words), self.SEPARATOR)
        out = []
        for doc in documents:
            ids = (
                *head,
                *(FakeEncoder._word_id(w) for w in WORD.findall(doc.lower())),
                self.SEPARATOR,
            )
            out.append(Tokenized(ids=ids[: self.info.max_length], original_length=len(ids)))
        return out

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if self.failure is not None:
            raise self.failure
        if self.seconds_per_token:
            time.sleep(max(len(t.ids) for t in batch) * len(batch) * self.seconds_per_token)
        self.batches.append(len(batch))
        return np.array([self.score(t.ids) for t in batch], dtype=np.float32)

    @classmethod
    def score(cls, ids: Sequence[int]) -> float:
        cut = ids.index(cls.SEPARATOR)
        query = set(ids[:cut])
        document = set(ids[cut + 1 :]) - {cls.SEPARATOR}
        return len(query & document) / max(len(query), 1)
