"""Several devices in one process: bulk docs/s through ``EmbeddingService`` on 1 vs. 2 devices.

    python bench/scale_devices.py [--devices 1 2] [--docs 2000] [--seconds-per-token 5e-5]

Each device is a ``FakeEncoder(seconds_per_token=...)``: its forward pass sleeps a fixed time
per padded token, outside the GIL, as a GPU's kernels run while the host waits, so the
machine's few CPU cores are not what is measured. One service per device count, built as
``model.devices`` builds it (one replica and one model thread per device), each device warmed
up as ``serve`` does (so bulk batches are cut to ``batching.max_bulk_batch_ms`` of model time
from the start); then ``--docs`` documents of ``--words`` words are embedded on the bulk lane
in pages of ``--page``, ``--in-flight`` pages at a time (as the follower's parallel pages
do), tokenisation included. Each count runs ``--repeat`` times and keeps its best run (other
work on a shared machine only ever slows a run down). Reports docs/s, tokens/s (real
tokens), the share of the devices' limit reached (devices / seconds_per_token tokens/s; the
rest is overhead), the batches each device ran and the speed-up over the first row. The
issue's target: 2 devices >= 1.8x one.

``measure_devices`` is the function ``bench/scale.py`` calls for its second section. This
script prints a markdown table and writes JSON and markdown to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from es_embed.config import BatchSettings, ModelSettings  # noqa: E402
from es_embed.embed.service import EmbeddingService  # noqa: E402
from es_embed.embed.startup import warm_up  # noqa: E402
from es_embed.embed.workers import Replica  # noqa: E402
from tests.fakes import FakeEncoder  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET = 1.8  # 2 devices vs. 1 (issue 12)


def documents(count: int, words: int) -> list[str]:
    """Distinct documents of ``words`` words from a small vocabulary (the fake's cost is per
    token, so the text only has to tokenise to the same length every time)."""
    vocab = [f"w{i}" for i in range(512)]
    return [" ".join(vocab[(d * 7 + j) % len(vocab)] for j in range(words)) for d in range(count)]


def measure_devices(
    devices: Sequence[int] = (1, 2),
    *,
    docs: int = 2000,
    words: int = 48,
    seconds_per_token: float = 5e-5,
    page: int = 64,
    in_flight: int = 8,
    repeat: int = 3,
    batching: BatchSettings | None = None,
) -> list[dict[str, Any]]:
    """One row per device count (its best of ``repeat`` runs): docs/s and tokens/s on the
    bulk lane, each device's batches, and the speed-up over the first count."""
    texts = documents(docs, words)
    batching = batching or BatchSettings()
    rows = []
    for n in devices:
        runs = [
            asyncio.run(_measure(n, texts, seconds_per_token, page, in_flight, batching))
            for _ in range(repeat)
        ]
        rows.append(max(runs, key=lambda r: float(r["docs_per_s"])))
    for row in rows:
        row["speedup"] = round(row["docs_per_s"] / rows[0]["docs_per_s"], 3)
    return rows


async def _measure(
    devices: int,
    texts: list[str],
    seconds_per_token: float,
    page: int,
    in_flight: int,
    batching: BatchSettings,
) -> dict[str, Any]:
    fakes = [FakeEncoder(seconds_per_token=seconds_per_token) for _ in range(devices)]
    replicas = [Replica(f) for f in fakes[1:]]
    svc = EmbeddingService(fakes[0], batching, ModelSettings(name="fake"), replicas=replicas)
    await svc.start()
    try:
        for device, fake in enumerate(fakes):
            await warm_up(svc, fake, batching, prove_budget=False, device=device)
        for fake in fakes:
            fake.batches.clear()
        pages = [texts[i : i + page] for i in range(0, len(texts), page)]
        gate = asyncio.Semaphore(in_flight)

        async def one(chunk: list[str]) -> None:
            async with gate:
                await svc.embed_documents(chunk)

        started = time.perf_counter()
        await asyncio.gather(*(one(chunk) for chunk in pages))
        seconds = time.perf_counter() - started
    finally:
        await svc.stop()
    tokens = sum(len(t.ids) for t in fakes[0].tokenize(texts))
    return {
        "devices": devices,
        "docs": len(texts),
        "seconds": round(seconds, 3),
        "docs_per_s": round(len(texts) / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        # Of what the devices could do with no overhead at all (every document is as long as
        # the others, so no padding): the rest is batching, threads and the event loop.
        "of_ideal": round(tokens / seconds * seconds_per_token / devices, 3),
        "batches_per_device": [len(f.batches) for f in fakes],
        "bulk_batch_tokens": [p.bulk_budget() for p in svc.lanes.paces],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| devices | docs/s | tokens/s | of the devices' limit | batches per device | speed-up |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        per = ", ".join(map(str, r["batches_per_device"]))
        lines.append(
            f"| {r['devices']} | {r['docs_per_s']:,.0f} | {r['tokens_per_s']:,} | "
            f"{r['of_ideal']:.0%} | {per} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--words", type=int, default=48)
    parser.add_argument("--seconds-per-token", type=float, default=5e-5)
    parser.add_argument("--page", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows = measure_devices(
        args.devices,
        docs=args.docs,
        words=args.words,
        seconds_per_token=args.seconds_per_token,
        page=args.page,
        in_flight=args.in_flight,
        repeat=args.repeat,
    )
    text = table(rows)
    best = rows[-1]["speedup"]
    verdict = f"{rows[-1]['devices']} devices: {best:.2f}x one (target >= {TARGET}x)"
    print(text)
    print(verdict)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta = {
        "when": stamp,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        # A loaded machine slows the event loop's hand-offs between batches, not the devices.
        "load_average_1m": os.getloadavg()[0],
        "settings": vars(args),
    }
    (RESULTS / f"scale_devices-{stamp}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2)
    )
    (RESULTS / f"scale_devices-{stamp}.md").write_text(f"{text}\n\n{verdict}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
