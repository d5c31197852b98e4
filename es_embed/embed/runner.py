"""One device's model threads: every forward pass of that device's embedder and reranker
replicas runs here.

Two threads per device, one per lane (``workers.py`` runs one of these per device): a query's
pass starts while a bulk pass is in flight, which then stands aside for it at its next layer
boundary (``turns.py``), so the device still runs one pass at a time and a query waits for
at most one layer of bulk work. A batch holds one kind of work (``batching.py``); ``run``
sends it to its model, splits it in halves while it runs out of memory (``memory.py``),
refuses output that is non-finite or mis-shaped (so a broken model fails loudly instead of
serving garbage), and records the batch metrics: the service's totals, and per device its
batches, model time and pauses.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import Counter

from es_embed.embed.batching import padded_cost
from es_embed.embed.lanes import LANES
from es_embed.embed.memory import Parts, forward_in_parts
from es_embed.embed.protocol import Encoder, Lane, ModelKind, Reranker, Tokenized
from es_embed.embed.turns import Layered, Turn, Turns
from es_embed.metrics import SIZE_BUCKETS, Registry


class ModelRunner:
    def __init__(
        self,
        encoder: Encoder,
        reranker: Reranker | None,
        registry: Registry,
        device: str = "",
    ) -> None:
        self._encoder = encoder
        self._reranker = reranker
        self._threads: dict[Lane, ThreadPoolExecutor] = {}
        self._turns = Turns()
        self.device = device or encoder.info.device  # its name in metrics and log lines
        # Where the bulk pass stands aside for a query; an encoder without layer hooks still
        # serves, its queries waiting for the bulk pass in flight.
        self.layers = 0  # layer boundaries a bulk pass may pause at
        if isinstance(encoder, Layered):
            self.layers = encoder.on_layer(self._turns.between_layers)
        r = registry
        self._m_batch_size = r.histogram(
            "es_embed_batch_size", "Inputs per forward pass.", buckets=SIZE_BUCKETS
        )
        self._m_batch_tokens = r.histogram(
            "es_embed_batch_tokens", "Padded tokens per forward pass.", buckets=SIZE_BUCKETS
        )
        self._m_forward = r.histogram(
            "es_embed_forward_seconds",
            "Model time of a forward pass, by lane (a bulk pass's pauses for queries left out).",
            ("lane",),
            known=[LANES],
        )
        self._m_tokens = r.counter(
            "es_embed_tokens_total",
            "Tokens embedded (unpadded), by lane.",
            ("lane",),
            known=[LANES],
        )
        self._m_tps = r.gauge("es_embed_tokens_per_second", "Tokens/s of the last forward pass.")
        self._m_oom_splits = r.counter(
            "es_embed_oom_splits_total", "Batches split in halves after running out of memory."
        )

        def per_device(name: str, doc: str) -> Counter:  # this device's child of the counter
            return r.counter(name, doc, ("device",), known=[[self.device]]).labels(self.device)

        self._m_device_batches = per_device(
            "es_embed_device_batches_total", "Batches run, by device."
        )
        self._m_device_seconds = per_device(
            "es_embed_device_forward_seconds_total",
            "Model time, by device (its rate is how busy the device is).",
        )
        self._m_pauses = per_device(
            "es_embed_bulk_pauses_total",
            "Times a bulk pass stood aside at a layer boundary for a query, by device.",
        )

    def start(self) -> None:
        name = "es-embed-model-" + self.device.replace(":", "").replace("/", "-")
        self._threads = {
            lane: ThreadPoolExecutor(1, thread_name_prefix=f"{name}-{lane}") for lane in LANES
        }

    def shutdown(self) -> None:
        for thread in self._threads.values():
            thread.shutdown(wait=False, cancel_futures=True)

    async def run(
        self, lane: Lane, kind: ModelKind, tokens: list[Tokenized], record: bool = True
    ) -> tuple[Parts, float]:
        """One batch on the lane's model thread, in its turn on the device, split in halves
        while it runs out of memory, and recorded in the metrics (if ``record``); raises any
        other error the model raises. Returns the parts and the batch's model time (what it
        waited for its turn and paused for queries left out)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        parts, turn = await loop.run_in_executor(
            self._threads[lane], self._in_turn, lane, kind, tokens
        )
        seconds = time.perf_counter() - started - turn.waited - turn.paused
        self._m_oom_splits.inc(parts.splits)
        self._m_pauses.inc(turn.pauses)
        if record:
            self._record(lane, tokens, seconds)
        return parts, seconds

    def _in_turn(self, lane: Lane, kind: ModelKind, tokens: list[Tokenized]) -> tuple[Parts, Turn]:
        forward = functools.partial(self._checked_forward, kind)
        with self._turns.bulk() if lane == "bulk" else self._turns.query() as turn:
            return forward_in_parts(forward, tokens), turn

    def _record(self, lane: Lane, tokens: list[Tokenized], seconds: float) -> None:
        real = sum(len(t.ids) for t in tokens)
        self._m_batch_size.observe(len(tokens))
        self._m_batch_tokens.observe(padded_cost([len(t.ids) for t in tokens]))
        self._m_forward.labels(lane=lane).observe(seconds)
        self._m_tokens.labels(lane=lane).inc(real)
        self._m_tps.set(real / seconds if seconds > 0 else 0.0)
        self._m_device_batches.inc()
        self._m_device_seconds.inc(seconds)

    async def forward(self, kind: ModelKind, tokens: list[Tokenized]) -> np.ndarray:
        """A forward pass in a query's turn, not recorded (health probes use it)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads["query"], self._probe, kind, tokens)

    def _probe(self, kind: ModelKind, tokens: list[Tokenized]) -> np.ndarray:
        with self._turns.query():
            return self._checked_forward(kind, tokens)

    def _checked_forward(self, kind: ModelKind, tokens: list[Tokenized]) -> np.ndarray:
        model: Encoder | Reranker | None = self._reranker if kind == "rerank" else self._encoder
        if model is None:  # rerank work is only queued when a reranker is loaded
            raise RuntimeError("a rerank batch reached a service without a reranker")
        out = model.forward(tokens)
        if out.shape[0] != len(tokens) or not np.isfinite(out).all():
            raise FloatingPointError(f"the {kind} model returned non-finite or mis-shaped output")
        return out
