"""The server half of ``bench/device_suite.py``: ``es-embed serve`` on the suite's model,
driven by 1-128 clients, single queries idle and under a flood, and the report's tables."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import embed_throughput as bench
import processes

ROOT = Path(__file__).resolve().parents[1]
PER_REQUEST = 16
FLOOD = 32
READY = re.compile(r"model ready: (.*)$", re.MULTILINE)


@contextlib.asynccontextmanager
async def server(model: Path, args: argparse.Namespace, batching: dict[str, Any],
                 workdir: Path) -> AsyncIterator[tuple[str, str]]:  # fmt: skip
    """``es-embed serve`` on ``model``; yields (url, its "model ready" log line)."""
    import aiohttp

    port = bench.free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "server.json"
    config.write_text(json.dumps({
        "server": {"host": "127.0.0.1", "port": port, "max_inputs": 4096},
        "model": {"name": str(model), "device": args.device, "dtype": args.dtype,
                  "max_length": 512},
        "batching": batching, "follow": {"enabled": False}}))  # fmt: skip
    log_path = workdir / "server.log"
    command = [sys.executable, "-m", "es_embed.cli", "serve", "--config", str(config)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await processes.wait_healthy(session, url, proc, 600, log_path)
        found = READY.search(log_path.read_text(errors="replace"))
        yield url, found.group(1) if found else "(no start-up line)"
    finally:
        processes.stop(proc, 60)


async def drive(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` clients send 16 texts per request, one after another, for ``seconds``;
    tokens/s from the usage the server reports, to the last answer."""
    import aiohttp

    requests = [texts[i : i + PER_REQUEST] for i in range(0, len(texts), PER_REQUEST)]
    total, sent = 0, 0
    stop = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession, first: int) -> None:
        nonlocal total, sent
        i = first
        while time.perf_counter() < stop:
            body = {"input": requests[i % len(requests)], "input_type": "document"}
            tokens = await bench.post(session, url, body, "base64")
            total += tokens
            sent += 1
            i += clients

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, c) for c in range(clients)))
        elapsed = time.perf_counter() - started
    return {"clients": clients, "requests": sent, "seconds": elapsed,
            "tokens_per_s": total / elapsed}  # fmt: skip


class MemoryWatch:
    """Device memory in use (all processes: the server's), polled while servers run."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MemoryWatch:
        if self.cuda:
            self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        import torch

        while True:
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, (total - free) / 2**30)
            await asyncio.sleep(0.2)


async def one_server(model: Path, args: argparse.Namespace, workloads: dict[str, list[str]],
                     texts: list[str], batching: dict[str, Any], clients: list[int],
                     workdir: Path) -> dict[str, Any]:  # fmt: skip
    queries = [" ".join(t.split()[:10]) for t in texts[-200:]]
    out: dict[str, Any] = {"batching": batching, "throughput": {}}
    async with server(model, args, batching, workdir) as (url, ready):
        out["ready"] = ready
        print(f"  server ready: {ready}", flush=True)
        await drive(url, workloads["SciFact length mix"], 8, min(args.seconds, 3.0))  # warm-up
        for name, docs in workloads.items():
            rows = []
            for n in clients:
                rows.append(await drive(url, docs, n, args.seconds))
                print(f"  server, {name}, {n:>3} clients: {rows[-1]['tokens_per_s']:,.0f} "
                      "tokens/s", flush=True)  # fmt: skip
            out["throughput"][name] = rows
        mix = workloads["SciFact length mix"]
        out["idle"] = await bench.query_latency(url, queries, mix, 0, "base64", args.spacing,
                                                args.window)  # fmt: skip
        out["flood"] = await bench.query_latency(url, queries, mix, FLOOD, "base64",
                                                 args.spacing, args.window)  # fmt: skip
        print(f"  queries: idle p99 {out['idle']['p99_ms']:.1f} ms, under a {FLOOD}-client "
              f"flood p99 {out['flood']['p99_ms']:.1f} ms", flush=True)  # fmt: skip
    return out


async def run_servers(model: Path, args: argparse.Namespace, workloads: dict[str, list[str]],
                      texts: list[str]) -> dict[str, Any]:  # fmt: skip
    try:
        import elasticsearch  # noqa: F401  (es-embed serve needs it; bench/gpu_run.sh installs it)
    except ImportError as exc:
        print(f"server runs skipped: {exc} (pip install . first)", flush=True)
        return {"skipped": str(exc)}
    out: dict[str, Any] = {}
    workdir = Path(model).parent
    async with MemoryWatch(args.device) as memory:
        print("server: bounded (max_bulk_batch_ms default)", flush=True)
        out["bounded"] = await one_server(model, args, workloads, texts, {}, args.clients,
                                          workdir / "bounded")  # fmt: skip
        if args.device.startswith("cuda") and not args.no_unbounded:
            print("server: unbounded (max_bulk_batch_ms 0)", flush=True)
            out["unbounded"] = await one_server(model, args, workloads, texts,
                                                {"max_bulk_batch_ms": 0}, [FLOOD],
                                                workdir / "unbounded")  # fmt: skip
    out["peak_device_memory_gib"] = memory.peak if memory.cuda else None
    return out


# ---- report ------------------------------------------------------------------------------


def report(r: dict[str, Any], args: argparse.Namespace,
           flop_per_token: Callable[[str, float], float]) -> str:  # fmt: skip
    f, s = r["forward"], r["server"]
    peak = r["peak_tflops"]
    lines = [
        f"{r['device']}, {r['started'][:10]}: {r['shape']}-shaped model, random "
        f"{r['dtype']} weights ({r['parameters'] / 1e6:,.1f} M parameters), {f['attention']} "
        f"attention; texts: {r['texts']}; MFU against {peak or 'no known'} TFLOP/s dense bf16; "
        f"torch threads {r['threads'] or 'default'}; load average {r['load_average'][0]:.1f} on "
        f"{os.cpu_count()} CPUs; "
        f"{r['seconds']:.0f} s in all",
        "",
        "| forward only | tokens/input | best batch | tokens/s | MFU | tokenizer tokens/s "
        "(one lane thread) | host syncs/pass |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("512-token documents", "SciFact length mix"):
        w = f[name]
        b = w["best"]
        syncs = "n/a" if w["syncs_per_pass"] is None else w["syncs_per_pass"]
        lines.append(f"| {name} | {w['mean_length']:.0f} | {b['batch_size']} | "
                     f"{b['tokens_per_s']:,.0f} | {pct(b['mfu'])} | "
                     f"{w['tokenizer_tokens_per_s']:,.0f} | {syncs} |")  # fmt: skip
    mem = ", ".join(f"{k} {v:.1f}" for k, v in f["memory"].items())
    lines += ["", f"Peak memory, forward only: {mem}; device memory in use while the servers "
              f"ran: {gib(s.get('peak_device_memory_gib'))}.", ""]  # fmt: skip
    if "skipped" in s:
        return "\n".join([*lines, f"Server runs skipped: {s['skipped']}."])
    lines += ["| server | workload | clients | tokens/s | vs forward-only | MFU |",
              "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for label in ("bounded", "unbounded"):
        for name, rows in s.get(label, {}).get("throughput", {}).items():
            limit = f[name]["best"]["tokens_per_s"]
            per_token = f[name]["flop_per_token"]
            for row in rows:
                mfu = row["tokens_per_s"] * per_token / (peak * 1e12) if peak else None
                lines.append(f"| {label} | {name} | {row['clients']} | {row['tokens_per_s']:,.0f}"
                             f" | {row['tokens_per_s'] / limit:.2f}x | {pct(mfu)} |")  # fmt: skip
    lines += ["", f"Single queries {args.spacing:g} s apart, idle and while {FLOOD} clients "
              f"flood the server with {PER_REQUEST} SciFact-mix documents per request:", "",
              "| server | idle p50 / p99 ms | loaded p50 / p99 ms | max ms | p99 vs idle | "
              "bulk tokens/s meanwhile |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label in ("bounded", "unbounded"):
        if label in s:
            idle, flood = s[label]["idle"], s[label]["flood"]
            lines.append(f"| {label} | {idle['p50_ms']:.1f} / {idle['p99_ms']:.1f} | "
                         f"{flood['p50_ms']:.1f} / {flood['p99_ms']:.1f} | {flood['max_ms']:.0f}"
                         f" | {flood['p99_ms'] / idle['p99_ms']:.1f}x | "
                         f"{flood['flood_tokens_per_s'] or 0:,.0f} |")  # fmt: skip
    lines += ["", f"Server start-up: {s['bounded']['ready']}"]
    return "\n".join(lines)


def pct(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "n/a"


def gib(value: float | None) -> str:
    return f"{value:.1f} GiB" if value is not None else "n/a (not CUDA)"


if __name__ == "__main__":  # a helper of device_suite.py, not a script
    sys.exit(f"run {Path(__file__).with_name('device_suite.py')}; {os.path.basename(__file__)} "
             "is its server half")  # fmt: skip
