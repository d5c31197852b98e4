"""Passages against truncation, on a BEIR dataset (issue 10's targets), in one run.

    python bench/passages.py --dataset arguana --max-queries 400 --max-docs 3000 \
        --vector-cache ~/.cache/es-embed-bench/vectors          # the README rows
    python bench/passages.py --dataset arguana --max-queries 200 --max-docs 1500   # quick

Three indices of the same documents, MiniLM-L6-v2 (all loaded with ``es-embed ingest``'s
loader, so passages are cut and written as in production; ``--vector-cache`` only spares
the model the inputs it has already embedded once, ``bench/vector_memo.py``):

1. ``window 128``: one vector per document, the model window cut to 128 tokens;
2. ``passages 128/32``: passages of at most 128 tokens (title included), 32 overlapping;
3. ``window 256``: one vector per document at the model's full 256 tokens.

For each: kNN and hybrid (auto and RRF) nDCG@10 and Recall@100 through ``Searcher`` (k =
window = 100; on the passage index ``k`` counts documents) on both halves of the queries
(``bench/quality_eval.py``: choices on the tuning half, the README reports the other); the
per-query differences from the 128-token window with their standard error, and the
"recovered" share (how much of what cutting the window to 128 loses, passages win back:
(P - T128) / (T256 - T128), when that loss exceeds its noise); the passages' own vectors
scored exactly outside Elasticsearch by max, mean and first passage
(``bench/passages_exact.py``); kNN latency p50/p95 (Elasticsearch and fusion only: each
query's vector is computed once and reused, since embedding it costs the same for every
index of one model; the indices interleaved, the passage index also with ``passages: 0``,
no inner hits); and bytes on disk per document (``_stats`` store size after a force-merge
to one segment, over the top-level document count; nested passages are Lucene documents of
their own).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from elasticsearch import AsyncElasticsearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.passages_exact import aggregations  # noqa: E402
from bench.quality import (  # noqa: E402
    DATA_DIR,
    IGNORE_IDENTICAL_IDS,
    Dataset,
    analyzer_for,
    cached,
    ensure_index,
    load_model,
    minilm_settings,
    pct,
    read_beir,
    run_and_report,
    run_queries,
    subset,
)
from bench.quality_eval import halves, metrics, ndcg_at, ranked  # noqa: E402
from bench.vector_memo import MemoEncoder  # noqa: E402
from es_embed.config import BatchSettings, IndexSettings, PassageSettings  # noqa: E402
from es_embed.embed.protocol import Encoder  # noqa: E402
from es_embed.embed.service import EmbeddingService  # noqa: E402
from es_embed.indices.resolve import resolve_index  # noqa: E402
from es_embed.search.execute import Searcher  # noqa: E402
from es_embed.search.spec import SearchSpec  # noqa: E402

MODES = [("knn", "knn", "rrf"), ("hybrid auto", "hybrid", "auto"), ("hybrid rrf", "hybrid", "rrf")]
NO_PASSAGES = "passages, none returned"


@dataclass(frozen=True)
class Variant:
    label: str
    window: int  # the model's max_length
    passages: PassageSettings | None = None


def variants(max_tokens: int, overlap: int) -> list[Variant]:
    return [
        Variant(f"window {max_tokens}", max_tokens),
        Variant(f"passages {max_tokens}/{overlap}", 256, PassageSettings(max_tokens, overlap)),
        Variant("window 256", 256),
    ]


async def store_per_doc(es: AsyncElasticsearch, index: str) -> dict[str, float]:
    stats = await es.indices.stats(index=index, metric="store,docs")
    primaries = stats["indices"][index]["primaries"]
    docs = (await es.count(index=index))["count"]
    lucene = primaries["docs"]["count"]
    return {
        "bytes_per_doc": primaries["store"]["size_in_bytes"] / docs,
        "passages_per_doc": (lucene - docs) / docs if lucene > docs else 1.0,
    }


Run = tuple[str, Searcher, str, int]  # label, searcher, index, passages asked for


async def knn_latency(runs: list[Run], data: Dataset, n: int) -> dict[str, list[float]]:
    """kNN ``took_ms`` per index, the indices interleaved query by query (a busy moment of a
    shared machine then slows every index alike)."""
    times: dict[str, list[float]] = {run[0]: [] for run in runs}
    queries = list(data.queries.values())
    for i in range(n):  # cycling through the queries: their vectors are cached by now
        for label, searcher, index, count in runs[i % len(runs) :] + runs[: i % len(runs)]:
            query = queries[i % len(queries)]
            spec = SearchSpec(index=index, query=query, mode="knn", k=10, passages=count)
            times[label].append((await searcher.search(spec)).took_ms)
    return times


async def quality(searcher: Searcher, data: Dataset, index: str) -> dict[str, Any]:
    """nDCG@10 and Recall@100 of each mode on each half (``tune``, ``report``) of the queries:
    choices are made on the tuning half, the README reports the other."""
    row: dict[str, Any] = {}
    split = halves(data.qrels)
    for label, mode, fusion in MODES:
        start = time.monotonic()
        run = ranked(
            await run_queries(searcher, data, index, mode, fusion),
            data.name in IGNORE_IDENTICAL_IDS,
        )
        row[label] = {}
        for name, qrels in split.items():
            ndcg, recall = metrics(f"{index} {label}", run, qrels)
            row[label][name] = {"ndcg@10": ndcg, "recall@100": recall}
        # Per query on the reported half: differences between indices come with their error.
        row[label]["per_query"] = {q: ndcg_at(run, {q: r}, 10) for q, r in split["report"].items()}
        print(f"  {label:<11} nDCG@10 {row[label]['report']['ndcg@10']:.4f} (reported half), "
              f"{row[label]['tune']['ndcg@10']:.4f} (tuning half)  "
              f"({time.monotonic() - start:.0f} s)", file=sys.stderr)  # fmt: skip
    return row


async def started(window: int, memo: Path | None) -> tuple[EmbeddingService, Encoder]:
    model = replace(minilm_settings(), max_length=window)
    encoder: Encoder = await asyncio.to_thread(load_model, model)
    if memo is not None:
        encoder = MemoEncoder(encoder, memo)
    service = EmbeddingService(encoder, BatchSettings(), model)
    await service.start()
    return service, encoder


def index_name(dataset: str, v: Variant) -> str:
    return f"es-embed-bench-{dataset}-{v.label.replace(' ', '-').replace('/', '-')}"


async def study(args: argparse.Namespace) -> dict[str, Any]:
    data = read_beir(args.data_dir / args.dataset, args.dataset)
    data = subset(data, args.max_queries, args.max_docs, args.seed)
    es = AsyncElasticsearch(args.es_url, request_timeout=300)
    services: dict[int, EmbeddingService] = {}
    encoders: dict[int, Encoder] = {}
    try:
        analyzer = await analyzer_for(es, "en")
        print(f"{args.dataset}: {len(data.corpus):,} documents, {len(data.queries):,} queries",
              file=sys.stderr)  # fmt: skip
        rows: list[dict[str, Any]] = []
        runs: list[Run] = []
        embedders = {}
        for v in variants(args.max_tokens, args.overlap):
            if v.window not in services:
                services[v.window], encoders[v.window] = await started(v.window, args.vector_cache)
                embedders[v.window] = cached(services[v.window].embed_query)
            service, index = services[v.window], index_name(args.dataset, v)
            print(f"{v.label}: {index}", file=sys.stderr)
            load_s = await ensure_index(
                es, service, data, index, analyzer, None, args.reindex, passages=v.passages
            )
            target = resolve_index(
                IndexSettings(name=index, passages=v.passages), service.info.shape
            )
            searcher = Searcher(es, embedders[v.window], [target])
            scores = await quality(searcher, data, index)
            store = await store_per_doc(es, index)
            rows.append({"variant": v.label, "index": index, "load_seconds": load_s,
                         **scores, "store": store})  # fmt: skip
            runs.append((v.label, searcher, index, 3))
        # The first index again with full-window queries: what cutting the documents alone does.
        cut = rows[0]["index"]
        full = Searcher(
            es, embedders[256], [resolve_index(IndexSettings(name=cut), services[256].info.shape)]
        )
        print(f"{rows[0]['variant']}, queries at 256", file=sys.stderr)
        docs_only = {
            "variant": f"{rows[0]['variant']}, queries at 256",
            **await quality(full, data, cut),
        }
        # The same passages and vectors scored outside Elasticsearch: max (what the nested kNN
        # does), mean and first passage, to see what the aggregation does on this data.
        exact = await asyncio.to_thread(
            aggregations, encoders[256], data, ("title", "text"), args.max_tokens, args.overlap
        )
        # The passage index again without inner hits: what returning passages costs.
        runs.append((NO_PASSAGES, runs[1][1], runs[1][2], 0))
        for _, searcher, index, count in runs:  # warm-up
            await knn_latency([("warm", searcher, index, count)], data, 5)
        times = await knn_latency(runs, data, args.latency_queries)
        bare = times[NO_PASSAGES]
        for row in rows:
            t = times[row["variant"]]
            row["knn_ms"] = {"p50": pct(t, 50), "p95": pct(t, 95), "n": len(t)}
        mapping = await es.indices.get_mapping(index=rows[2]["index"])
        vector = mapping[rows[2]["index"]]["mappings"]["properties"]["embedding"]
    finally:
        for service in services.values():
            await service.stop()
        for encoder in encoders.values():
            if isinstance(encoder, MemoEncoder):
                encoder.flush()
        await es.close()
    return {
        "dataset": args.dataset,
        "documents": len(data.corpus),
        "queries": len(data.queries),
        "split": {name: len(qrels) for name, qrels in halves(data.qrels).items()},
        "index_options": vector.get("index_options", {}).get("type", "server default"),
        "rows": rows,
        "docs_only": docs_only,
        "exact": exact,
        "recovered": {mode: recovered(rows, mode) for mode, _, _ in MODES},
        "differences": {mode: differences(rows, mode) for mode, _, _ in MODES},
        "knn_p50_ratio": rows[1]["knn_ms"]["p50"] / rows[2]["knn_ms"]["p50"],
        "knn_p50_ratio_without_passages": pct(bare, 50) / rows[2]["knn_ms"]["p50"],
        "storage_ratio": rows[1]["store"]["bytes_per_doc"] / rows[2]["store"]["bytes_per_doc"],
    }


def recovered(rows: list[dict[str, Any]], mode: str) -> float:
    """The share of the 128-token window's loss that passages win back; nan when there is no
    loss to speak of (not above two standard errors of the per-query differences)."""
    cut, passages, full = (r[mode]["report"]["ndcg@10"] for r in rows)
    lost, error = differences(rows, mode)[rows[2]["variant"]]
    return (passages - cut) / lost if lost > 2 * error else float("nan")


def differences(rows: list[dict[str, Any]], mode: str) -> dict[str, list[float]]:
    """nDCG@10 of each index minus the 128-token window's, query by query on the reported
    half: the mean and its standard error (is a difference larger than the noise?)."""
    base = rows[0][mode]["per_query"]
    out = {}
    for row in rows[1:]:
        d = np.array([row[mode]["per_query"][q] - base[q] for q in base])
        out[row["variant"]] = [float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))]
    return out


def table(report: dict[str, Any]) -> str:
    split = report.get("split", {})
    lines = [
        f"{report['dataset']}: {report['documents']:,} documents, {report['queries']:,} queries "
        f"(reported half {split.get('report', '?')}, tuning half {split.get('tune', '?')}); "
        f"MiniLM-L6-v2, dense_vector `{report['index_options']}`",
        "",
        "| index (reported half) | kNN nDCG@10 | kNN R@100 | hybrid auto nDCG@10 "
        "| hybrid RRF nDCG@10 | kNN p50 ms | bytes/doc | passages/doc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in [*report["rows"], report["docs_only"]]:
        k, a, h = (r[mode]["report"] for mode in ("knn", "hybrid auto", "hybrid rrf"))
        s, t = r.get("store"), r.get("knn_ms")
        lines.append(
            f"| {r['variant']} | {k['ndcg@10']:.4f} | {k['recall@100']:.4f} | "
            f"{a['ndcg@10']:.4f} | {h['ndcg@10']:.4f} | "
            + (f"{t['p50']:.1f} | " if t else "- | ")
            + (f"{s['bytes_per_doc']:,.0f} | {s['passages_per_doc']:.2f} |" if s else "- | - |")
        )
    rec = report["recovered"]
    lines += [
        "",
        "Recovered of what the 128-token window loses (reported half): "
        + ", ".join(f"{mode} {share:.0%}" for mode, share in rec.items())
        + " (target: at least 50%; nan: the cut loses nothing beyond two standard errors).",
        "nDCG@10 minus the 128-token window's, mean +- standard error over the reported "
        "half's queries: "
        + "; ".join(
            f"{mode}: " + ", ".join(f"{v} {m:+.4f} +- {e:.4f}" for v, (m, e) in d.items())
            for mode, d in report["differences"].items()
        )
        + ".",
        f"Passage kNN p50 over one-vector (256) kNN p50: {report['knn_p50_ratio']:.2f}x "
        f"with the best 3 passages, {report['knn_p50_ratio_without_passages']:.2f}x without "
        "(passages: 0) (target: at most 1.5x).",
        f"Bytes per document, passages over one vector: {report['storage_ratio']:.2f}x.",
        "Exact kNN nDCG@10 of the passages, scored outside Elasticsearch (reported half / "
        "tuning half), a document by its best passage (max, as the nested kNN), by the mean "
        "of its passages, by its first passage: "
        + ", ".join(
            f"{way} {v['report']:.4f} / {v['tune']:.4f}" for way, v in report["exact"].items()
        )
        + ".",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="arguana")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--es-url", default=os.environ.get("ES_URL"))
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--max-queries", type=int)
    p.add_argument("--max-docs", type=int)
    p.add_argument("--latency-queries", type=int, default=600)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--reindex", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--vector-cache",
        type=Path,
        help="remember the model's vectors by token ids here (bench/vector_memo.py), so a "
        "rerun or another index of the same texts skips the model",
    )
    return run_and_report(p.parse_args(argv), study, table)


if __name__ == "__main__":
    raise SystemExit(main())
