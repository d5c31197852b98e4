"""A deterministic fake encoder behind the ``Encoder`` protocol, for tests above the model.

Words hash to fixed random vectors and a text's vector is their normalised sum, so texts
sharing words are close: enough for retrieval tests without a model. It counts calls,
can simulate compute time, and can be told to fail (to test 503s and recovery).

Also ``ScriptedBulk``: a node answering bulk requests from a script, for unit tests of the
refusal policy (which items are written, retried, dropped or given up).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from elastic_transport import ApiResponseMeta, BaseAsyncNode, HttpHeaders
from elastic_transport._node import NodeApiResponse  # the return type a node must give
from elasticsearch import AsyncElasticsearch

from es_embed.embed.protocol import ModelInfo, RerankerFamily, RerankerInfo, Spans, Tokenized
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
            special_tokens=1,  # the end-of-text token
        )
        self.seconds_per_token = seconds_per_token
        self.forward_calls = 0
        self.encoded_inputs = 0
        self.batches: list[int] = []  # batch sizes, in order
        self.failure: BaseException | None = None  # raised by every forward() while set
        self._lock = threading.Lock()
        # Each word's vector, made once: seeding a generator per token would cost more CPU
        # than the simulated compute, which must be what a benchmark with the fake measures.
        self._word_vectors: dict[int, np.ndarray] = {}

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
        cut = full[: self.info.max_length]
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
            word = self._word_vectors.get(i)
            if word is None:
                word = np.random.default_rng(i).standard_normal(self._info.hidden_size)
                self._word_vectors[i] = word
            total += word
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


class HeldEncoder(FakeEncoder):
    """While ``hold`` is set, forward() signals ``entered`` and waits for ``release``: a test
    can act (fail the model, block an index) while a batch is inside the model."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if self.hold.is_set():
            self.entered.set()
            self.release.wait(20)
        return super().forward(batch)


class LayeredEncoder(FakeEncoder):
    """The fake with layers, as ``turns.Layered``: a pass calls the ``on_layer`` hooks before
    each of ``layers`` layers, each of which takes ``seconds_per_layer``."""

    def __init__(self, layers: int = 4, seconds_per_layer: float = 0.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.layers = layers
        self.seconds_per_layer = seconds_per_layer
        self._hooks: list[Callable[[], None]] = []

    def on_layer(self, hook: Callable[[], None]) -> int:
        self._hooks.append(hook)
        return self.layers

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        for _ in range(self.layers):
            for hook in self._hooks:
                hook()
            time.sleep(self.seconds_per_layer)
        return super().forward(batch)


def refuse_as_a_gpu(batch: Sequence[Tokenized], most_inputs: int, most_tokens: int | None) -> None:
    """Raise torch.cuda.OutOfMemoryError, as a GPU does, for a batch of more than
    ``most_inputs`` inputs or ``most_tokens`` padded tokens."""
    import torch  # here, not at the top: most unit tests never need it

    padded = max(len(t.ids) for t in batch) * len(batch)
    if len(batch) > most_inputs or padded > (most_tokens or padded):
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
            "of 23.55 GiB of which 1.12 GiB is free."
        )


class OutOfMemoryEncoder(FakeEncoder):
    """The fake, refusing batches above a size as a GPU out of memory does
    (``refuse_as_a_gpu``). ``attempts`` records every call's batch size, refused ones too."""

    def __init__(self, most_inputs: int, most_tokens: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.most_inputs = most_inputs
        self.most_tokens = most_tokens
        self.attempts: list[int] = []

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        self.attempts.append(len(batch))
        refuse_as_a_gpu(batch, self.most_inputs, self.most_tokens)
        return super().forward(batch)


# For setup tests that give every index explicit dims: a wide Matryoshka model accepts them.
ANY_SHAPE = ModelShape("fake-encoder", 4096, matryoshka=True)


# ---- an Elasticsearch node that answers bulk requests from a script --------------------


@dataclass(frozen=True)
class Whole:
    """The whole bulk request refused: an HTTP error with Elasticsearch's error body."""

    status: int
    type: str


Item = tuple[int, str | None]  # one bulk item's status and error type (None: written)
Step = Callable[[list[str]], Whole | list[Item]]  # ids sent, in order -> the answer


class ScriptedBulk:
    """Answers the n-th bulk request with ``steps[n]`` (every item written once the script
    runs out) and records each request's action lines and ids.

    ``client()`` is a real ``AsyncElasticsearch`` (no retries of its own, like production)
    whose one node is this script, so ``elasticsearch.helpers`` runs for real above it.
    """

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls: list[list[str]] = []  # the ids of each request, in order
        self.actions: list[list[dict[str, Any]]] = []  # the action lines of each request
        self.sources: dict[str, dict[str, Any]] = {}  # the last document sent for each id

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        actions = [line for line in lines if len(line) == 1 and next(iter(line)) in OPS]
        ids = [str(next(iter(a.values()))["_id"]) for a in actions]
        for action, source in zip(lines[::2], lines[1::2], strict=False):
            if action in actions:
                self.sources[str(next(iter(action.values()))["_id"])] = source
        step = self.steps[len(self.calls)] if len(self.calls) < len(self.steps) else None
        self.calls.append(ids)
        self.actions.append(actions)
        got = step(ids) if step else [(201, None)] * len(ids)
        if isinstance(got, Whole):
            error = {"type": got.type, "reason": f"scripted {got.type}"}
            return got.status, {"error": {**error, "root_cause": [error]}, "status": got.status}
        items = []
        for action, (status, kind) in zip(actions, got, strict=True):
            ((op, meta),) = action.items()
            item: dict[str, Any] = {"_index": meta["_index"], "_id": meta["_id"], "status": status}
            if kind is not None:
                item["error"] = {"type": kind, "reason": f"scripted {kind}"}
            items.append({op: item})
        return 200, {"took": 1, "errors": any(k for _, k in got), "items": items}

    def client(self) -> AsyncElasticsearch:
        script = self

        class Node(BaseAsyncNode):
            async def perform_request(  # type: ignore[override]
                self, method: str, target: str, body: bytes | None = None, *_: Any, **__: Any
            ) -> NodeApiResponse:
                status, payload = script.answer(body or b"")
                headers = HttpHeaders(
                    {"content-type": "application/json", "x-elastic-product": "Elasticsearch"}
                )
                meta = ApiResponseMeta(status, "1.1", headers, 0.0, self.config)
                return NodeApiResponse(meta, json.dumps(payload).encode())

            async def close(self) -> None:
                pass

        return AsyncElasticsearch(
            "http://scripted:9200", node_class=Node, max_retries=0, retry_on_timeout=False
        )


OPS = ("index", "create", "update", "delete")


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


class OutOfMemoryReranker(FakeReranker):
    """FakeReranker refusing batches above a size as a GPU out of memory does."""

    def __init__(self, most_inputs: int, most_tokens: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.most_inputs = most_inputs
        self.most_tokens = most_tokens

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        refuse_as_a_gpu(batch, self.most_inputs, self.most_tokens)
        return super().forward(batch)
