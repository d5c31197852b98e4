"""Rerank latency, and what reranks cost an embedding query on the same query lane.

    python bench/rerank_latency.py [--embedder DIR] [--reranker DIR] [--device cpu]

In one process, on the embedding service that ``es-embed serve`` runs (both models, the
default batching):

1. **rerank, window 50**: one query against 50 documents (synthetic prose of 60-180 words,
   fixed seed), ``--repeats`` times one after another: p50 and p99 of ``service.rerank``,
   which is what ``/v1/search`` with ``rerank: {window: 50}`` adds to a search.
2. **query latency**: single short embedding queries one after another, p50/p99, alone and
   while ``--clients`` clients send window-50 reranks back to back. Target (issue 11): a
   rerank never delays an embedding query by more than one batch. Every batch the service
   runs is logged as the scheduler sees it (``run_batch``: from the moment the batch is
   cut and handed to the model thread until its output is back), and the target is read
   two ways from the same run: (a) by time, the query's p99 under reranks <= its idle p99
   + the longest rerank batch; (b) by count, immune to a busy machine: the rerank batches
   each query waited for (in flight when it was sent, or cut while it waited for its own
   batch) must be at most one.
   The batching is the default: rerank batches are cut to ``batching.max_rerank_batch_ms``
   of model time (``--rerank-batch-ms`` overrides it; 0 = one batch per token budget).

Default models: the tiny random Qwen3 embedder and Qwen3 reranker the tests build (so the
numbers measure the server's scheduling, not a real model); pass directories for real
ones. Prints a markdown table and writes JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root: the tests' tiny models

from es_embed.config import BatchSettings, ModelSettings, RerankerSettings  # noqa: E402
from es_embed.embed.service import EmbeddingService  # noqa: E402

QUERY = "how does the reranker score a passage against the query"
RESULTS = ROOT / "bench" / "results"
PROSE = (
    "the model reads each passage and the query together and scores how well the passage "
    "answers it while the index keeps vectors and text for hybrid search across many shards "
    "with filters on dates topics and languages so results stay fresh and relevant"
).split()


def documents(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(PROSE, size=int(rng.integers(60, 181)))) for _ in range(n)]


def pct(ms: list[float], q: float) -> float:
    return round(float(np.percentile(ms, q)), 2)


async def timed(make: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        await make()
        out.append((time.perf_counter() - start) * 1000)
    return out


Batch = tuple[str, float, float]  # model ("embed" | "rerank"), cut, done (perf_counter s)


def record_batches(service: EmbeddingService) -> list[Batch]:
    """Wrap the service's ``run_batch`` (its devices' workers): each batch is appended as its
    output comes back."""
    batches: list[Batch] = []
    workers = service.workers
    run_batch = workers.run_batch

    async def timed(lane: Any, kind: str, tokens: Any, record: bool = True, device: int = 0) -> Any:
        start = time.perf_counter()
        try:
            return await run_batch(lane, kind, tokens, record, device)  # type: ignore[arg-type]
        finally:
            batches.append((kind, start, time.perf_counter()))

    workers.run_batch = timed  # type: ignore[method-assign]
    return batches


def waits(sent: list[float], batches: list[Batch]) -> tuple[list[float], list[int]]:
    """For queries sent one after another at ``sent``: how long each waited for the model
    (sent -> its own batch is cut, ms), and how many rerank batches each waited for (in
    flight when it was sent, or cut before its own)."""
    embeds = sorted(start for kind, start, _ in batches if kind == "embed")
    reranks = [(start, end) for kind, start, end in batches if kind == "rerank"]
    waited, behind = [], []
    for t in sent:
        own = next(s for s in embeds if s >= t)
        waited.append((own - t) * 1000)
        behind.append(sum(1 for start, end in reranks if end > t and start < own))
    return waited, behind


async def queries_under_reranks(
    service: EmbeddingService, docs: list[str], clients: int, repeats: int
) -> tuple[list[float], list[float]]:
    """Each query's latency (ms) and when it was sent."""
    stop = asyncio.Event()
    sent: list[float] = []

    async def flood() -> None:
        while not stop.is_set():
            await service.rerank(QUERY, docs)

    async def query() -> None:
        sent.append(time.perf_counter())
        await service.embed_query("a short query", None)

    tasks = [asyncio.create_task(flood()) for _ in range(clients)]
    await asyncio.sleep(0.2)  # the reranks are queued and running
    try:
        return await timed(query, repeats), sent
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def run(args: argparse.Namespace, embedder: str, reranker_dir: str) -> dict[str, Any]:
    from es_embed.embed.encoder import load_encoder
    from es_embed.embed.rerank import load_reranker

    model = ModelSettings(name=embedder, device=args.device)
    encoder = load_encoder(model)
    reranker = load_reranker(RerankerSettings(name=reranker_dir, device=args.device))
    batching = BatchSettings()
    if args.rerank_batch_ms is not None:
        batching = dataclasses.replace(batching, max_rerank_batch_ms=args.rerank_batch_ms)
    service = EmbeddingService(encoder, batching, model, reranker=reranker)
    passes = record_batches(service)
    await service.start()
    try:
        docs = documents(args.window)
        await timed(lambda: service.rerank(QUERY, docs), 3)  # warm-up
        rerank = await timed(lambda: service.rerank(QUERY, docs), args.repeats)
        idle = await timed(lambda: service.embed_query("a short query", None), args.repeats)
        passes.clear()
        loaded, sent = await queries_under_reranks(service, docs, args.clients, args.repeats)
    finally:
        await service.stop()
    batches = [(end - start) * 1000 for kind, start, end in passes if kind == "rerank"]
    one_batch = round(max(batches), 2)
    waited, behind = waits(sent, passes)
    return {
        "rerank_window": args.window,
        "max_rerank_batch_ms": batching.max_rerank_batch_ms,
        "rerank_p50_ms": pct(rerank, 50),
        "rerank_p99_ms": pct(rerank, 99),
        "longest_rerank_batch_ms": one_batch,
        "rerank_batches": len(batches),
        "query_idle_p50_ms": pct(idle, 50),
        "query_idle_p99_ms": pct(idle, 99),
        "query_under_reranks_p50_ms": pct(loaded, 50),
        "query_under_reranks_p99_ms": pct(loaded, 99),
        "rerank_clients": args.clients,
        # > 0: a query waited longer than one batch beyond its idle p99
        "excess_over_one_batch_ms": round(pct(loaded, 99) - pct(idle, 99) - one_batch, 2),
        "query_wait_for_model_p50_ms": pct(waited, 50),
        "query_wait_for_model_max_ms": round(max(waited), 2),
        "queries": len(sent),
        # how many queries waited for 0, 1, 2, ... rerank batches
        "rerank_batches_waited_for": {n: behind.count(n) for n in sorted(set(behind))},
        "target_met_by_time": pct(loaded, 99) <= pct(idle, 99) + one_batch,
        "target_met_by_count": max(behind) <= 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", help="embedding model directory (default: tiny Qwen3)")
    parser.add_argument("--reranker", help="reranker directory (default: tiny Qwen3 reranker)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--window", type=int, default=50, help="documents per rerank")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4, help="concurrent rerank clients")
    parser.add_argument(
        "--rerank-batch-ms", type=float, help="batching.max_rerank_batch_ms (default: its own)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        embedder, reranker = args.embedder, args.reranker
        if embedder is None:
            from tests.model_fixtures import write_tiny_qwen

            embedder = str(write_tiny_qwen(Path(tmp) / "tiny-qwen"))
        if reranker is None:
            from tests.reranker_fixtures import write_tiny_qwen_reranker

            reranker = str(write_tiny_qwen_reranker(Path(tmp) / "tiny-qwen-reranker"))
        result = asyncio.run(run(args, embedder, reranker))
    result["models"] = {"embedder": args.embedder or "tiny-qwen3", "reranker": args.reranker
                        or "tiny-qwen3-reranker"}  # fmt: skip
    result["machine"] = f"{platform.machine()}, {args.device}"
    print("| measure | ms |\n|---|---|")
    for key, value in result.items():
        if key.endswith("_ms"):
            print(f"| {key} | {value} |")
    print(
        f"target by time (query p99 under reranks <= idle p99 + one batch): "
        f"{result['target_met_by_time']}; by count (queries by rerank batches waited for: "
        f"{result['rerank_batches_waited_for']}): {result['target_met_by_count']}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"rerank_latency-{stamp}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
