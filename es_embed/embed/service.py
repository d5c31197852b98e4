"""EmbeddingService: the asyncio front end of the models, each device's on its own thread.

Two lanes feed the models (``lanes.py``: the query lane first, bounded admission, batch
cutting); each device's replica takes the next batch when it is free (``workers.py``).
Tokenisation runs on worker threads, one per lane and one for reranker pairs (never on the event
loop; a query's never waits behind bulk texts or rerank pairs). A batch that runs out of memory
is split and retried (``memory.py``): only an input that cannot fit even alone is refused (413).
Any other model failure fails its waiters with 503 and takes its device out until a probe
succeeds; with no device left, the service is unhealthy. ``startup.py`` builds one from the
settings.

An optional reranker shares all of it: its pairs queue on the query lane, with the same
admission and metrics, and run on the same threads, one model per batch (``batching.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import numpy as np

from es_embed.config import DEFAULT_QUERY_TASK, BatchSettings, ModelSettings
from es_embed.embed.batching import Request
from es_embed.embed.lanes import LANES, Lanes
from es_embed.embed.protocol import (
    Encoder,
    InputType,
    Lane,
    ModelInfo,
    ModelKind,
    Reranker,
    RerankerInfo,
    Spans,
    Tokenized,
)
from es_embed.embed.results import Embeddings, Reranked, truncate_and_normalize
from es_embed.embed.workers import Replica, Workers
from es_embed.errors import EmbedError, ErrorKind, invalid, not_found, unavailable
from es_embed.metrics import Registry

log = logging.getLogger(__name__)
# The tokenizer threads: one per lane, and one for reranker pairs. A window of long pairs
# takes tens of ms to tokenise; a query tokenised behind it would reach the query lane after
# the next rerank batch had started, and wait for two batches instead of one.
Tokenizing = Literal["query", "bulk", "pairs"]
TOKENIZERS: tuple[Tokenizing, ...] = (*LANES, "pairs")
T = TypeVar("T")

MIN_DIMS = 32


def format_query(task: str, text: str) -> str:
    # Exactly as Qwen3-Embedding's authors format queries: one newline, no space after ':'.
    return f"Instruct: {task}\nQuery:{text}"


class EmbeddingService:
    def __init__(
        self,
        encoder: Encoder,
        batching: BatchSettings,
        model: ModelSettings,
        registry: Registry | None = None,
        reranker: Reranker | None = None,
        *,
        replicas: Sequence[Replica] = (),
    ) -> None:
        """``encoder`` and ``reranker`` run on the first device; ``replicas`` are the copies
        of them on each further device (``model.devices``)."""
        self._encoder = encoder
        self._reranker = reranker
        self._batching = batching
        self._model = model
        registry = registry or Registry()
        every = [Replica(encoder, reranker), *replicas]
        self._lanes = Lanes(batching, registry, devices=len(every))
        self._workers = Workers(every, self._lanes, batching, registry, self._probe_tokens)
        self._started = False
        self._tokenizers: dict[Tokenizing, ThreadPoolExecutor] = {}
        self._stopping = False
        self._m_truncated = registry.counter(
            "es_embed_truncated_inputs_total", "Inputs cut to max_length."
        )

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._encoder.info

    @property
    def reranker_info(self) -> RerankerInfo | None:
        return self._reranker.info if self._reranker is not None else None

    @property
    def devices(self) -> list[str]:
        """Each model replica's device, in order (numbered where a device repeats)."""
        return self._workers.devices

    async def start(self) -> None:
        self._tokenizers = {
            name: ThreadPoolExecutor(1, thread_name_prefix=f"es-embed-tok-{name}")
            for name in TOKENIZERS
        }
        self._workers.start()
        self._started = True

    async def stop(self, drain_seconds: float = 0.0) -> None:
        """Refuse new work, let queued work finish for up to ``drain_seconds``, fail the rest."""
        self._stopping = True
        deadline = time.monotonic() + drain_seconds
        while (self._lanes.pending() or self._workers.busy()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        error = unavailable("the embedding service is shutting down")
        await self._workers.stop(error)
        self._lanes.fail_all(error)
        for pool in self._tokenizers.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def health(self) -> tuple[bool, str | None]:
        if self._stopping:
            return False, "shutting down"
        if not self._started:
            return False, "not started"
        if self._workers.stopped():
            return False, "batch scheduler stopped"
        if self._workers.failure is not None:
            return False, self._workers.failure
        return True, None

    @property
    def workers(self) -> Workers:
        """The devices' model threads (the warm-up runs its passes on each with ``run_batch``)."""
        return self._workers

    @property
    def lanes(self) -> Lanes:
        """The lanes' batch cutting, and each device's pace (token budget and measured speed:
        start-up sizes them)."""
        return self._lanes

    # ---- request helpers -------------------------------------------------------------

    def check_dims(self, dims: int | None, param: str = "dimensions") -> int:
        info = self.info
        if dims is None:
            return info.hidden_size
        if isinstance(dims, bool) or not isinstance(dims, int):
            raise invalid(f"{param} must be an integer, got {type(dims).__name__}", param)
        if info.matryoshka_dims:
            if dims not in info.matryoshka_dims:
                valid = ", ".join(map(str, info.matryoshka_dims))
                raise invalid(f"{param} must be one of {valid} for this model, got {dims}", param)
            return dims
        low = min(MIN_DIMS, info.hidden_size)
        if not low <= dims <= info.hidden_size:
            raise invalid(
                f"{param} must be between {low} and {info.hidden_size} for this model, got {dims}",
                param,
            )
        return dims

    def format_query(self, text: str, instruction: str | None = None) -> str:
        """The query text the model sees; instruction-tuned models get their instruction.

        An explicit or configured task always applies. Otherwise a prompt declared by the
        model's sentence-transformers config wins, and last-token (Qwen3-style) models get
        the default task; mean/cls models without a prompt (MiniLM) see the bare query.
        """
        task = instruction or (
            self._model.query_instruction
            if self._model.query_instruction != DEFAULT_QUERY_TASK
            else None
        )
        if task:
            return format_query(task, text)
        if self.info.query_prompt is not None:
            return self.info.query_prompt + text
        if self.info.pooling == "lasttoken":
            return format_query(DEFAULT_QUERY_TASK, text)
        return text

    async def embed_documents(self, texts: Sequence[str], dims: int | None = None) -> np.ndarray:
        return (await self.embed(texts, input_type="document", dims=dims)).vectors

    async def embed_query(
        self, text: str, dims: int | None = None, instruction: str | None = None
    ) -> np.ndarray:
        result = await self.embed([text], input_type="query", dims=dims, instruction=instruction)
        return result.vectors[0]

    async def embed(
        self,
        texts: Sequence[str],
        *,
        input_type: InputType = "document",
        dims: int | None = None,
        instruction: str | None = None,
    ) -> Embeddings:
        dims = self.check_dims(dims)
        lane: Lane = "query" if input_type == "query" else "bulk"
        for i, text in enumerate(texts):
            if not text:
                raise invalid(f"input[{i}] is empty; every input needs some text", f"input[{i}]")
        if not texts:
            return Embeddings(np.zeros((0, dims), np.float32), 0, 0)
        self._admit(lane, len(texts))
        if input_type == "query":
            texts = [self.format_query(t, instruction) for t in texts]
        tokens = await self._tokenize(lane, self._encoder.tokenize, texts)
        truncated = self._check_lengths(tokens)
        vectors = await self._submit(lane, "embed", tokens)
        return Embeddings(
            truncate_and_normalize(vectors, dims),
            prompt_tokens=sum(len(t.ids) for t in tokens),
            truncated=truncated,
        )

    async def embed_split(
        self,
        texts: Sequence[str],
        split: Callable[[int, Spans], list[Sequence[int]]],
        dims: int | None = None,
    ) -> list[np.ndarray]:
        """Texts as several inputs each (passages; one [inputs, dims] array per text): ``split``
        picks content ids from text ``i``'s tokens and offsets, on the bulk tokenizer thread."""
        dims = self.check_dims(dims)

        def tokenize(texts: Sequence[str]) -> list[list[Tokenized]]:
            spans = self._encoder.spans(texts)
            return [[self._encoder.wrap(ids) for ids in split(i, s)] for i, s in enumerate(spans)]

        groups = await self._tokenize("bulk", tokenize, texts)
        tokens = [t for group in groups for t in group]
        self._check_lengths(tokens)
        step = max(1, self._batching.bulk_queue // 4)  # no document too long to be admitted
        raw = [await self._submit("bulk", "embed", tokens[i : i + step])
               for i in range(0, len(tokens), step)]  # fmt: skip
        vectors = np.concatenate(raw or [np.zeros((0, self.info.hidden_size), np.float32)])
        parts = np.split(truncate_and_normalize(vectors, dims), np.cumsum([len(g) for g in groups]))
        return parts[: len(groups)]

    async def rerank(
        self, query: str, documents: Sequence[str], instruction: str | None = None
    ) -> Reranked:
        """Relevance scores of ``documents`` for ``query`` (higher is more relevant), on the
        query lane. ``instruction`` replaces the configured one (Qwen3-Reranker only)."""
        reranker = self._reranker
        if reranker is None:
            message = "no reranker is configured on this server (reranker.name)"
            raise not_found(message, "model", "model_not_found")
        if instruction is not None and not reranker.info.takes_instruction:
            raise invalid(
                f"instruction is not supported by {reranker.info.model_id!r} "
                f"(a {reranker.info.family}); only Qwen3-Reranker takes one",
                "instruction",
            )
        if not documents:
            return Reranked(np.zeros(0, np.float32), 0, 0)
        self._admit("query", len(documents))
        tokens = await self._tokenize(
            "pairs", reranker.tokenize_pairs, query, documents, instruction
        )
        truncated = sum(1 for t in tokens if t.truncated)
        self._m_truncated.inc(truncated)
        scores = await self._submit("query", "rerank", tokens)
        return Reranked(scores, sum(len(t.ids) for t in tokens), truncated)

    async def _tokenize(self, pool: Tokenizing, tokenize: Callable[..., T], *args: Any) -> T:
        """Run a tokenizer on its own thread (a query's never waits behind other work)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizers[pool], tokenize, *args)

    async def _submit(self, lane: Lane, kind: ModelKind, tokens: list[Tokenized]) -> np.ndarray:
        """Queue tokenised inputs and wait for the model's output for each, in order."""
        self._admit(lane, len(tokens))  # again: the lane may have filled while we tokenised
        future = asyncio.get_running_loop().create_future()
        request = Request(size=len(tokens), future=future, kind=kind)
        self._lanes.enqueue(lane, request, tokens)
        try:
            result: np.ndarray = await request.future
        except asyncio.CancelledError:
            # The client went away: its queued inputs are dropped before the model sees them.
            self._lanes.withdraw(lane, request)
            raise
        return result

    def _admit(self, lane: Lane, n: int) -> None:
        if self._stopping:
            raise unavailable("the embedding service is shutting down")
        if self._workers.failure is not None:
            raise unavailable(f"the model is unavailable: {self._workers.failure}")
        self._lanes.admit(lane, n)

    def _check_lengths(self, tokens: list[Tokenized]) -> int:
        cut = [i for i, t in enumerate(tokens) if t.truncated]
        if cut and self._model.truncation == "error":
            i = cut[0]
            raise EmbedError(
                ErrorKind.INVALID_REQUEST,
                f"input[{i}] has {tokens[i].original_length} tokens, more than the limit of "
                f"{self.info.max_length} (model.max_length); shorten it or set "
                "model.truncation: truncate",
                param=f"input[{i}]",
                code="input_too_long",
            )
        if cut:
            self._m_truncated.inc(len(cut))
        return len(cut)

    # ---- the model threads ------------------------------------------------------------

    async def _probe_tokens(self, kind: ModelKind) -> list[Tokenized]:
        """A health probe's input for ``kind``'s model, tokenised on the query lane's thread."""
        return await self._tokenize("query", self._probe_input, kind)

    def _probe_input(self, kind: ModelKind) -> list[Tokenized]:
        if kind == "rerank" and self._reranker is not None:
            return self._reranker.tokenize_pairs("health probe", ["health probe"])
        return self._encoder.tokenize(["health probe"])
