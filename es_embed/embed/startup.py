"""Building the service from the settings: load the models (a replica on each of
``model.devices``, ``devices.py``), and for ``serve`` size each device's token budget from its
memory, warm each replica up and log what was chosen, all before the server answers anything.

The warm-up runs the shapes the model will see before the first request does, so the first
request is not slow (CUDA kernels, allocator pools) and the first bulk batch is already cut
to ``batching.max_bulk_batch_ms``: the warm-up measured the model's speed. A reranker is
warmed up the same way, so its first batch is cut to ``batching.max_rerank_batch_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from es_embed.config import BatchSettings, Settings
from es_embed.embed.protocol import Encoder, Reranker
from es_embed.embed.service import EmbeddingService
from es_embed.embed.workers import Replica
from es_embed.metrics import Registry

if TYPE_CHECKING:  # torch: imported only when a model is loaded
    from es_embed.embed.encoder import HFEncoder

log = logging.getLogger(__name__)

# Tokens per warm-up input: a long document. Longer inputs are rare, and at the full
# max_length attention alone could need more memory than a start-up check should risk.
WARMUP_WIDTH = 512


@contextlib.asynccontextmanager
async def embedding_service(
    settings: Settings,
    encoder: Encoder | None = None,
    registry: Registry | None = None,
    *,
    reranker: Reranker | None = None,
    with_reranker: bool = False,
    warm_up: bool = False,
) -> AsyncIterator[EmbeddingService]:
    """A started service for the configured model (loaded off the event loop unless given),
    with ``reranker``, or (``with_reranker``) the configured reranker if there is one.

    ``warm_up`` (``serve``; a one-shot command would only wait longer): the loaded model
    gets its token budget from the device and runs its warm-up before this yields, which is
    before the server answers anything, /health included.
    """
    loaded: list[HFEncoder] = []
    replicas: list[Replica] = []
    if encoder is None:
        from es_embed.embed.devices import load_replicas  # heavy (torch): only when needed

        rerank = reranker is None and with_reranker and bool(settings.reranker.name)
        loaded, rerankers = await asyncio.to_thread(load_replicas, settings, rerank)
        if reranker is not None and len(loaded) > 1:  # a model is called from one thread
            raise ValueError("a reranker given to the service runs on one device, not several")
        encoder, reranker = loaded[0], rerankers[0] if rerank else reranker
        replicas = [Replica(e, r) for e, r in zip(loaded[1:], rerankers[1:], strict=True)]
    elif reranker is None and with_reranker and settings.reranker.name:
        from es_embed.embed.rerank import load_reranker

        reranker = await asyncio.to_thread(load_reranker, settings.reranker)
    service = EmbeddingService(
        encoder, settings.batching, settings.model, registry, reranker=reranker, replicas=replicas
    )
    await service.start()
    try:
        if loaded and warm_up:
            await start_up(service, loaded, settings.batching, reranker)
        yield service
    finally:
        await service.stop()


async def start_up(
    service: EmbeddingService,
    encoders: list[HFEncoder],
    batching: BatchSettings,
    reranker: Reranker | None = None,
) -> None:
    """For each device's replica in turn: budget from the device, warm-up, and one log line
    saying device, dtype, memory in use, the token budget and how it was chosen, the bulk
    bound at the measured speed, and where a bulk pass can stand aside for a query."""
    for device, encoder in enumerate(encoders):
        budget, how = encoder.token_budget(batching.max_batch_tokens)
        prove = encoder.info.device != "cpu"
        await warm_up(
            service, encoder, batching, budget, prove_budget=prove, device=device, reranker=reranker
        )
        info = encoder.info
        layers = service.workers.layers(device)
        log.info(
            "model ready: %s on %s (%s), memory %s; %s; %s",
            info.model_id,
            service.devices[device],
            info.dtype,
            encoder.memory_in_use(),
            service.lanes.paces[device].describe(how),
            f"a bulk pass stands aside for queries at {layers} layers"
            if layers
            else "no layer stack found: a query waits for the bulk pass in flight",
        )
        if not layers:
            log.warning(
                "%s has no layer stack es-embed can pause at: a query waits for a whole bulk "
                "pass (up to batching.max_bulk_batch_ms = %g ms; lower it, e.g. to 25, if "
                "queries must wait less)",
                info.model_id,
                batching.max_bulk_batch_ms,
            )


async def warm_up(
    service: EmbeddingService,
    encoder: Encoder,
    batching: BatchSettings,
    token_budget: int | None = None,
    prove_budget: bool = True,
    device: int = 0,
    reranker: Reranker | None = None,
) -> None:
    """On device number ``device``: the largest batch the token budget allows
    (``prove_budget``: it shows the budget fits, and one that does not is halved until it
    does; pointless in host memory, which swaps rather than fails), a bulk batch of about
    max_bulk_batch_ms (whose measured speed bounds the first real one), and a lone query; then,
    with a ``reranker`` (its tokenizer; the device's own replica runs the pairs), one long pair
    and a rerank batch of about max_rerank_batch_ms. None of it counts in the batch metrics."""
    pace = service.lanes.paces[device]
    budget = pace.budget
    if token_budget is not None:
        budget.set_ceiling(token_budget)
    long = encoder.tokenize([" ".join(["warm"] * WARMUP_WIDTH)])
    width = len(long[0].ids)
    most = batching.max_batch_size
    largest = max(1, min(most, budget.current // width)) if prove_budget else 1
    await service.workers.run_batch("bulk", "embed", long * largest, record=False, device=device)
    if budget.current < budget.ceiling:  # the largest batch did not fit: never try it again
        budget.set_ceiling(budget.current)
    bulk = long * max(1, min(most, pace.bulk_budget() // width))
    await service.workers.run_batch("bulk", "embed", bulk, record=False, device=device)
    query = encoder.tokenize([service.format_query("warm-up")])
    await service.workers.run_batch("query", "embed", query, record=False, device=device)
    if reranker is not None:
        pair = reranker.tokenize_pairs("warm-up", [" ".join(["warm"] * WARMUP_WIDTH)])
        run = service.workers.run_batch
        await run("query", "rerank", pair, record=False, device=device)  # a first speed
        n = max(1, min(most, pace.rerank_budget() // len(pair[0].ids)))
        await run("query", "rerank", pair * n, record=False, device=device)
