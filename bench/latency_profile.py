"""Where a query's time goes under a bulk flood: a profile of ``--latency``'s loaded runs.

    python bench/latency_profile.py [--spacing 0.5] [--window 40] [--threads 1]

Runs the app factory in a subprocess with timing hooks (nothing in es_embed changes): every
query's time in the service is split into tokenising, waiting for the model (the bulk batch
in flight, then the scheduler waking) and its own forward pass; the client's latency minus
the service's time is HTTP and the event loop. It also samples the event loop's lag (a 10 ms
sleep's overshoot) and each bulk batch's forward time, and reports them idle and under the
flood of ``embed_throughput.py --latency`` (32 clients, 16 SciFact documents per request),
with the load average, so the wait that dominates can be read off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import embed_throughput as bench  # noqa: E402
import processes  # noqa: E402

LAG_TICK = 0.01


# ---- the server, with hooks --------------------------------------------------------------


def serve(config: Path) -> None:
    from aiohttp import web

    from es_embed.api.app import create_app
    from es_embed.config import load_settings
    from es_embed.embed.service import EmbeddingService
    from es_embed.embed.workers import Workers

    events: dict[str, list[Any]] = {"query": [], "batch": [], "lag": []}
    run_batch, embed = Workers.run_batch, EmbeddingService.embed
    tokenize = EmbeddingService._tokenize

    async def timed_run_batch(
        self: Any, lane: str, kind: str, tokens: Any, record: bool = True, device: int = 0
    ) -> Any:
        started = time.perf_counter()
        rows = await run_batch(self, lane, kind, tokens, record, device)
        padded = max(len(t.ids) for t in tokens) * len(tokens)
        events["batch"].append((lane, started, time.perf_counter(), len(tokens), padded))
        return rows

    async def timed_tokenize(self: Any, lane: str, fn: Any, *args: Any):  # type: ignore[no-untyped-def]
        out = await tokenize(self, lane, fn, *args)
        if lane == "query":
            events["query"][-1]["tokenized"] = time.perf_counter()
        return out

    async def timed_embed(self: Any, texts: Any, **kw: Any):  # type: ignore[no-untyped-def]
        if kw.get("input_type") != "query":
            return await embed(self, texts, **kw)
        entry = {"started": time.perf_counter()}
        events["query"].append(entry)
        result = await embed(self, texts, **kw)
        entry["done"] = time.perf_counter()
        return result

    Workers.run_batch = timed_run_batch  # type: ignore[method-assign]
    EmbeddingService._tokenize = timed_tokenize  # type: ignore[method-assign]
    EmbeddingService.embed = timed_embed  # type: ignore[method-assign]

    async def lag_monitor(app: web.Application) -> Any:
        async def tick() -> None:
            while True:
                started = time.perf_counter()
                await asyncio.sleep(LAG_TICK)
                events["lag"].append((started, time.perf_counter() - started - LAG_TICK))

        task = asyncio.create_task(tick())
        yield
        task.cancel()

    async def profile(request: web.Request) -> web.Response:
        return web.json_response(events)

    async def reset(request: web.Request) -> web.Response:
        for values in events.values():
            values.clear()
        return web.json_response({})

    settings = load_settings(config)
    app = create_app(settings)
    app.cleanup_ctx.append(lag_monitor)
    app.router.add_get("/_profile", profile)
    app.router.add_post("/_profile/reset", reset)
    web.run_app(app, host=settings.server.host, port=settings.server.port, print=None,
                handler_cancellation=True, access_log=None)  # fmt: skip


# ---- analysis ----------------------------------------------------------------------------


def pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ms = np.array(values) * 1000
    return {"n": len(ms), "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}  # fmt: skip


def breakdown(events: dict[str, Any]) -> dict[str, Any]:
    """Per query: tokenise, wait for the model (the batch in flight at enqueue, the rest),
    its own forward pass; and the event loop's lag and bulk batch times over the run."""
    batches = sorted(events["batch"], key=lambda b: b[1])
    query_batches = [b for b in batches if b[0] == "query"]
    parts: dict[str, list[float]] = {k: [] for k in
                                     ("tokenize", "wait_in_flight", "wait_other", "forward",
                                      "service")}  # fmt: skip
    for q in events["query"]:
        if "done" not in q or "tokenized" not in q:
            continue
        own = next((b for b in query_batches if b[1] >= q["tokenized"] and b[2] <= q["done"]), None)
        if own is None:
            continue
        ahead = [b for b in batches if b[1] < q["tokenized"] < b[2]]  # in flight at enqueue
        in_flight = max((b[2] for b in ahead), default=q["tokenized"]) - q["tokenized"]
        wait = own[1] - q["tokenized"]
        parts["tokenize"].append(q["tokenized"] - q["started"])
        parts["wait_in_flight"].append(min(in_flight, wait))
        parts["wait_other"].append(max(0.0, wait - in_flight))
        parts["forward"].append(own[2] - own[1])
        parts["service"].append(q["done"] - q["started"])
    bulk = [b for b in batches if b[0] == "bulk"]
    return {
        **{k: pct(v) for k, v in parts.items()},
        "loop_lag": pct([lag for _, lag in events["lag"]]),
        "bulk_batch": pct([b[2] - b[1] for b in bulk]),
        "bulk_inputs_per_batch": float(np.mean([b[3] for b in bulk])) if bulk else 0.0,
        "bulk_padded_per_batch": float(np.mean([b[4] for b in bulk])) if bulk else 0.0,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(url: str, args: argparse.Namespace, texts: list[str], queries: list[str],
                  flood: int, server_pid: int) -> dict[str, Any]:  # fmt: skip
    """The queries' latency and its breakdown; and the cores the server and this process
    (the flood's clients and the querying user) used meanwhile."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        await session.post(f"{url}/_profile/reset")
    wall, server, clients = time.perf_counter(), cpu_seconds(server_pid), cpu_seconds(os.getpid())
    client = await bench.query_latency(url, queries, texts, flood, "base64", args.spacing,
                                       args.window)  # fmt: skip
    wall = time.perf_counter() - wall
    cores = {"server": (cpu_seconds(server_pid) - server) / wall,
             "clients": (cpu_seconds(os.getpid()) - clients) / wall}  # fmt: skip
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_profile") as resp:
        events = await resp.json()
    await bench.settle(url, "base64")
    return {"client": client, "server": breakdown(events), "cores": cores}


def report(name: str, r: dict[str, Any]) -> str:
    c, s = r["client"], r["server"]
    load = c["load_average"][0]
    lines = [f"{name}: {c['queries']} queries, client p50 {c['p50_ms']:.1f} / p99 "
             f"{c['p99_ms']:.1f} / max {c['max_ms']:.0f} ms; load {load:.1f}; cores used: "
             f"server {r['cores']['server']:.2f}, clients {r['cores']['clients']:.2f}"]  # fmt: skip
    for key in ("service", "tokenize", "wait_in_flight", "wait_other", "forward", "loop_lag",
                "bulk_batch"):  # fmt: skip
        v = s[key]
        if v["n"]:
            lines.append(f"  {key:<15} p50 {v['p50']:7.1f}  p99 {v['p99']:7.1f}  "
                         f"max {v['max']:7.1f} ms  (n {v['n']})")  # fmt: skip
    lines.append(f"  bulk batches: {s['bulk_inputs_per_batch']:.1f} inputs, "
                 f"{s['bulk_padded_per_batch']:.0f} padded tokens on average")  # fmt: skip
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    texts, queries = bench.read_corpus(Path(args.corpus), args.docs)
    with tempfile.TemporaryDirectory(prefix="es-embed-profile-") as tmp:
        model = bench.model_dir(args.model, Path(tmp))
        port = bench.free_port()
        config = Path(tmp) / "server.json"
        batching = {} if args.bound_ms is None else {"max_bulk_batch_ms": args.bound_ms}
        config.write_text(json.dumps({
            "server": {"host": "127.0.0.1", "port": port},
            "model": {"name": model, "device": "cpu", "max_length": args.max_length},
            "batching": batching, "follow": {"enabled": False}}))  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        log = (Path(tmp) / "server.log").open("wb")
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                await processes.wait_healthy(session, url, proc, 300)
            await bench.server_throughput(url, texts[:16], 4, "base64")  # warm-up
            out = {"load_before": os.getloadavg(), "spacing": args.spacing}
            out["idle"] = await measure(url, args, texts, queries, 0, proc.pid)
            print(report("idle", out["idle"]), flush=True)
            out["flood"] = await measure(url, args, texts, queries, bench.FLOOD_CLIENTS, proc.pid)
            print(report(f"{bench.FLOOD_CLIENTS}-client flood", out["flood"]), flush=True)
            out["load_after"] = os.getloadavg()
        finally:
            processes.stop(proc, 30)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="minilm")
    p.add_argument("--docs", type=int, default=512)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--corpus", default=str(bench.CORPUS))
    p.add_argument("--spacing", type=float, default=0.5)
    p.add_argument("--window", type=float, default=40.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bound-ms", type=float)
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--serve", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(Path(args.serve))
        return 0
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"latency-profile-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
