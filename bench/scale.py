"""Scale-out (issue 12): follower docs/s on an 8-shard index with 1, 2 and 4 replica processes.

    python bench/scale.py [--section replicas|devices|all] [--docs 3000] [--replicas 1,2,4]
                          [--seconds-per-token 3e-4] [--es-url URL]

**replicas**: N real ``es-embed serve`` processes (``create_app`` + ``serve``, the same
machinery as the command) share one 8-shard index by shard leases. Their encoder stands for
a GPU: each forward costs a fixed time per padded token, slept in the model thread outside
the GIL (``tests/fakes.py`` ``FakeEncoder(seconds_per_token=...)``), so the machine's CPU
cores are not what is measured. Once the N replicas have split the shards (each one's
``es_embed_follow_shards_owned``), ``--docs`` documents are bulk-written; the clock runs from
the first write until every document has its vector. Target: N replicas >= 0.9 x N x one.

**devices**: 1 vs 2 devices in one process (target >= 1.8x): ``bench/scale_devices.py``'s
``measure_devices`` at the same cost per token.

Writes the table (markdown) and JSON to ``bench/results/``; prints the load average before
and after each run, since a shared machine's other work shows in the numbers.

Internal: ``python bench/scale.py --serve CONFIG SECONDS_PER_TOKEN`` is one replica.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from elasticsearch import AsyncElasticsearch  # noqa: E402

from devtools.es_node import node_url  # noqa: E402
from es_embed.config import settings_from_dict  # noqa: E402
from es_embed.provision.setup import Setup  # noqa: E402
from tests.fakes import ANY_SHAPE, FakeEncoder  # noqa: E402

SHARDS = 8
DIMS = 64
MODEL = "gpu-standin"
WORDS = 100  # per document: ~110 tokens with the title, one token per word
PAGE = 64
LEASE = 10.0


@dataclass(frozen=True)
class Row:
    section: str  # "replicas" or "devices"
    setup: str  # e.g. "2 replica processes", "2 devices, one process"
    n: int  # replicas or devices
    docs: int
    seconds: float
    docs_per_s: float
    speedup: float  # vs the section's n=1 row
    target: float  # the speedup the issue asks for
    note: str = ""

    @property
    def met(self) -> bool:
        return self.speedup >= self.target


# ---- one replica: the child process ---------------------------------------------------------


class GpuStandIn(FakeEncoder):
    """The fake's cost (a sleep per padded token) with a cheap vector per input, so the
    vectors' arithmetic does not load the CPUs the replicas share."""

    def _vector(self, ids: Sequence[int]) -> np.ndarray:
        rng = np.random.default_rng(hash(tuple(ids)) & 0xFFFFFFFF)
        return rng.standard_normal(self.info.hidden_size)


def serve_replica(config: str, seconds_per_token: float) -> int:
    """``es-embed serve --config CONFIG`` with the stand-in encoder instead of a model."""
    from es_embed.api.app import create_app
    from es_embed.cli.serve import LOG_FORMAT, serve
    from es_embed.config import load_settings

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    settings = load_settings(config)
    encoder = GpuStandIn(hidden_size=DIMS, seconds_per_token=seconds_per_token, model_id=MODEL)
    app = create_app(settings, encoder=encoder, follow=True)
    return asyncio.run(serve(app, settings))


# ---- the replicas section -----------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(es_url: str, index: str, state: str, name: str) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": _free_port()},
        "model": {"name": MODEL, "device": "cpu"},
        "elasticsearch": {"url": es_url},
        "follow": {
            "state_index": state,
            "poll_interval": 0.2,
            "page_size": PAGE,
            "replica_id": name,
            "lease_seconds": LEASE,
        },  # fmt: skip
        "indices": [{"name": index, "dims": DIMS, "text_fields": ["title", "text"]}],
    }


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def _owned(port: int) -> int:
    for line in _get(f"http://127.0.0.1:{port}/metrics").splitlines():
        if line.startswith("es_embed_follow_shards_owned{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return -1


async def _until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.2)


def _docs(index: str, ids: range) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for i in ids:
        body = " ".join(f"w{(i * 31 + j * 7) % 997}" for j in range(WORDS))
        ops += [{"index": {"_index": index, "_id": str(i)}}, {"title": f"doc {i}", "text": body}]
    return ops


async def _vectors(es: AsyncElasticsearch, index: str) -> int:
    await es.indices.refresh(index=index)
    resp = await es.count(index=index, query={"exists": {"field": "_embed.hash"}})
    return int(resp["count"])


async def run_replicas(es: AsyncElasticsearch, es_url: str, n: int, args: Any, tmp: Path) -> float:
    """Seconds from the first write until all ``args.docs`` documents have vectors."""
    tag = uuid.uuid4().hex[:6]
    index, state = f"scale-{n}-{tag}", f"scale-state-{n}-{tag}"
    configs = [_config(es_url, index, state, f"bench-{n}-{i}") for i in range(n)]
    await es.indices.create(index=index, settings={"number_of_shards": SHARDS})
    await Setup(es, settings_from_dict(configs[0]), ANY_SHAPE).run()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = []
    try:
        for i, raw in enumerate(configs):
            path = tmp / f"{index}-{i}.yaml"
            path.write_text(yaml.safe_dump(raw), encoding="utf-8")
            log = (tmp / f"{index}-{i}.log").open("wb")
            cmd = [sys.executable, __file__, "--serve", str(path), str(args.seconds_per_token)]
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=log))
            log.close()
        ports = [raw["server"]["port"] for raw in configs]
        share = SHARDS // n

        async def split() -> bool:
            owned = await asyncio.gather(*(asyncio.to_thread(_owned, p) for p in ports))
            return all(o == share for o in owned)

        await _until(split, 30 + 4 * LEASE, f"{n} replicas owning {share} shards each")
        started = time.monotonic()
        for at in range(0, args.docs, 500):
            resp = await es.bulk(operations=_docs(index, range(at, min(args.docs, at + 500))))
            assert not resp["errors"], "bulk write refused"

        async def done() -> bool:
            return await _vectors(es, index) >= args.docs

        await _until(done, 600, f"{args.docs} vectors")
        return time.monotonic() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await es.options(ignore_status=404).indices.delete(index=f"{index},{state}")


async def replica_rows(es_url: str, args: Any) -> list[Row]:
    es = AsyncElasticsearch(es_url, request_timeout=60)
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.replicas:
                before = os.getloadavg()[0]
                seconds = await run_replicas(es, es_url, n, args, Path(tmp))
                rate = args.docs / seconds
                one = rows[0].docs_per_s if rows else rate
                note = f"load {before:.1f} -> {os.getloadavg()[0]:.1f}"
                rows.append(Row("replicas", f"{n} replica process(es)", n, args.docs, seconds,
                                rate, rate / one, 0.9 * n, note))  # fmt: skip
                print(f"{n} replica(s): {rate:,.1f} docs/s ({seconds:.1f} s); {note}", flush=True)
    finally:
        await es.close()
    return rows


# ---- the devices section (bench/scale_devices.py) ----------------------------------------


def device_rows(es_url: str, args: Any) -> list[Row]:
    """1 vs 2 devices in one process (``bench/scale_devices.py``: the bulk lane of one
    ``EmbeddingService`` with a stand-in GPU per device, at this run's cost per token; no
    Elasticsearch: what is measured is the scheduler feeding several devices)."""
    from bench.scale_devices import measure_devices

    before = os.getloadavg()[0]
    found = measure_devices(
        (1, 2), docs=min(args.docs, 2000), seconds_per_token=args.seconds_per_token, repeat=2
    )
    return [
        Row("devices", f"{r['devices']} device(s), one process, {r['docs']} documents of "
            "48 words, no Elasticsearch", r["devices"], r["docs"],
            r["seconds"], r["docs_per_s"], r["speedup"], 1.0 if r["devices"] == 1 else 1.8,
            f"{r['of_ideal']:.0%} of the devices' limit; load {before:.1f} -> "
            f"{os.getloadavg()[0]:.1f}")
        for r in found
    ]  # fmt: skip


SECTIONS: dict[str, Callable[[str, Any], list[Row]]] = {
    "replicas": lambda url, args: asyncio.run(replica_rows(url, args)),
    "devices": device_rows,
}


# ---- the report ----------------------------------------------------------------------------


def table(rows: list[Row], args: Any) -> str:
    ideal = 1 / ((WORDS + 3) * args.seconds_per_token)  # one forward per doc, no padding
    lines = [
        f"{args.docs} documents of ~{WORDS + 3} tokens, {SHARDS} shards, stand-in GPU at "
        f"{args.seconds_per_token:g} s per padded token (~{ideal:,.0f} docs/s per device), "
        f"{platform.node()} ({os.cpu_count()} CPUs), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "| setup | docs/s | speedup | target | met | load |",
        "|---|---:|---:|---:|:-:|---|",
        *(f"| {r.setup} | {r.docs_per_s:,.1f} | {r.speedup:.2f}x | {r.target:.1f}x | "
          f"{'yes' if r.met else 'no'} | {r.note} |" for r in rows),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    p.add_argument("--seconds-per-token", type=float, default=3e-4)
    p.add_argument(
        "--es-url",
        default=os.environ.get("ES_URL"),
        help="Elasticsearch URL (default: $ES_URL, else a fresh node from devtools.es_node)",
    )
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    sections = list(SECTIONS) if args.section == "all" else [args.section]
    rows: list[Row] = []
    with node_url(args.es_url) as url:
        for name in sections:
            rows += SECTIONS[name](url, args)
    text = table(rows, args)
    print(text)
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    (out / f"scale-{stamp}.md").write_text(text, encoding="utf-8")
    data = [{**asdict(r), "met": r.met} for r in rows]
    (out / f"scale-{stamp}.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:  # one replica, started by run_replicas
        sys.exit(serve_replica(sys.argv[2], float(sys.argv[3])))
    sys.exit(main())
