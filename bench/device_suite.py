"""The GPU measurement of issue 13 in one run, for the day a GPU is lent (``bench/gpu_run.sh``).

    python bench/device_suite.py --gpu-shape qwen3-4b --out "$OUT"     # H100/H200: ~6 min
    python bench/device_suite.py --gpu-shape tiny --device cpu         # proof on a CPU: ~2 min

A randomly initialised model of the named shape (bf16 on CUDA; no hub, no download) and a
byte-level BPE tokenizer shaped like Qwen's, trained on the corpus so texts cut into about as
many tokens as Qwen's, are written to a folder that ``es-embed serve`` loads like any model.
Two workloads: 512-token documents (SciFact texts joined and cut at ``model.max_length``
512) and the SciFact length mix (each document as it is, up to 512). For each:

1. **forward-only limit**: ``HFEncoder.forward`` alone on length-sorted batches, best of a few
   batch sizes; tokens/s, model FLOP utilisation (MFU) against the GPU's dense bf16 peak
   (``PEAKS``, by the name CUDA reports), peak memory, host syncs per pass, and how fast one
   tokenizer thread runs (the server tokenises on one thread per lane).
2. **server**: ``es-embed serve`` in a subprocess (auto token budget, warm-up, default
   ``max_bulk_batch_ms``), 1, 8, 32 and 128 clients sending 16 texts per request for
   ``--seconds`` each; tokens/s from the ``usage`` the server reports, vs. the limit.
3. **queries**: single queries ``--spacing`` s apart, idle and under a 32-client flood of the
   mix, p50/p99/max, and the bulk tokens/s the flood got meanwhile.
4. **unbounded** (CUDA, unless ``--no-unbounded``): a second server with
   ``max_bulk_batch_ms: 0``, at 32 clients and under the same flood: what the bound costs.

Writes ``device-suite.md`` (the tables) and ``device-suite.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import device_serving as serving  # noqa: E402

# (hidden, intermediate, layers, heads, kv heads, head dim) of Qwen3's dense models.
SHAPES = {
    "qwen3-0.6b": (1024, 3072, 28, 16, 8, 128),
    "qwen3-4b": (2560, 9728, 36, 32, 8, 128),
    "qwen3-8b": (4096, 12288, 36, 32, 8, 128),
    "tiny": (64, 128, 2, 4, 2, 16),
}
QWEN3_VOCAB = 151665
# Dense bf16 tensor peaks, TFLOP/s (vendor data sheets, fp32 accumulate, no sparsity); the
# first name contained in the device's name wins, so the more specific names come first.
PEAKS = (
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("H20", 148.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 6000 Ada", 364.0),
)
MAX_LENGTH = 512
VOCAB = 32768  # the suite's tokenizer: about Qwen's tokens per English word on SciFact
TOKENIZER_DOCS = 1500  # documents it is trained on (300 for a CPU proof)


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAKS if key.lower() in name.lower()), None)


# ---- texts -------------------------------------------------------------------------------


def corpus_texts(path: Path | None, n: int) -> tuple[list[str], str]:
    """SciFact titles and abstracts, else (no corpus on the machine) synthetic texts with
    SciFact's length mix (log-normal word counts, median ~200 words)."""
    if path is not None and path.is_file():
        texts = []
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                texts.append(f"{doc.get('title', '')}\n{doc.get('text', '')}".strip())
                if len(texts) == n:
                    break
        return texts, f"SciFact ({path})"
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "ne", "ra", "tu", "sen", "vol", "dri", "pha", "cor", "bis"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(3000)]
    sizes = np.clip(np.random.default_rng(0).lognormal(5.3, 0.45, n), 10, 900).astype(int)
    return [" ".join(rng.choices(words, k=int(k))) for k in sizes], "synthetic (no corpus found)"


def long_texts(texts: Sequence[str], n: int) -> list[str]:
    """Texts of at least MAX_LENGTH tokens (four documents joined): cut to exactly 512."""
    return ["\n\n".join(texts[(4 * i + j) % len(texts)] for j in range(4)) for i in range(n)]


# ---- the model folder ------------------------------------------------------------------


def write_model(path: Path, shape: str, texts: Sequence[str], device: str, dtype: Any) -> int:
    """A random model of ``shape`` with a Qwen-shaped tokenizer and the sentence-transformers
    files of Qwen3-Embedding (last token, Normalize); returns its parameter count."""
    import torch
    from transformers import AutoModel, Qwen3Config

    if importlib.util.find_spec("pytest") is None:
        # The tests' model writers are plain functions beside their fixtures; a GPU machine
        # with only `pip install .` has no pytest, and only its decorator is needed here.
        sys.modules["pytest"] = types.SimpleNamespace(fixture=lambda **_: lambda f: f)  # type: ignore[assignment]
    from tests.model_fixtures import EOT, add_sentence_transformers_files, write_tiny_tokenizer

    started = time.perf_counter()
    trained_on = TOKENIZER_DOCS if device.startswith("cuda") else 300
    write_tiny_tokenizer(path, extra_text=tuple(texts[:trained_on]), vocab_size=VOCAB)
    hidden, inter, layers, heads, kv, head_dim = SHAPES[shape]
    tokens = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB if shape != "tiny" else VOCAB + 8,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        max_position_embeddings=40960,
        bos_token_id=tokens[EOT],
        eos_token_id=tokens[EOT],
    )
    torch.manual_seed(0)
    with torch.device(device):
        net = AutoModel.from_config(config, dtype=dtype)
    net.save_pretrained(str(path))
    params = sum(p.numel() for p in net.parameters())
    del net
    add_sentence_transformers_files(path, max_seq_length=MAX_LENGTH)
    pooling = path / "1_Pooling" / "config.json"
    width = '"word_embedding_dimension": '
    pooling.write_text(pooling.read_text().replace(f"{width}64", f"{width}{hidden}"))
    print(f"wrote {shape} ({params / 1e6:,.1f} M parameters) to {path} in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    return params


def flop_per_token(shape: str, length: float) -> float:
    """Model FLOPs per real token at ``length``: 2 per non-embedding weight, plus causal
    attention's scores and weighted sum (2 x length x query width per layer)."""
    hidden, inter, layers, heads, kv, head_dim = SHAPES[shape]
    q, kvw = heads * head_dim, kv * head_dim
    per_layer = hidden * (q + 2 * kvw) + q * hidden + 3 * hidden * inter
    return 2 * layers * per_layer + 2 * layers * length * q


def batch_flops(shape: str, lengths: Sequence[int]) -> float:
    return sum(n * flop_per_token(shape, n) for n in lengths)


# ---- forward-only ------------------------------------------------------------------------


def forward_limit(encoder: Any, shape: str, texts: list[str], args: argparse.Namespace,
                  peak: float | None) -> dict[str, Any]:  # fmt: skip
    """Best tokens/s over batch sizes on length-sorted batches, tokenisation excluded."""
    import torch

    cuda = encoder.info.device.startswith("cuda")
    # As the server's bulk lane tokenises: one thread, one request of 16 texts at a time (the
    # Rust tokenizer may spread a call over the cores, as it does in the server).
    started = time.perf_counter()
    tokens = [t for i in range(0, len(texts), 16) for t in encoder.tokenize(texts[i : i + 16])]
    tokenize_s = time.perf_counter() - started
    ordered = sorted(tokens, key=lambda t: len(t.ids))
    real = sum(len(t.ids) for t in ordered)
    flops = batch_flops(shape, [len(t.ids) for t in ordered])
    rows = []
    for size in args.batch_sizes:
        batches = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        try:
            encoder.forward(batches[-1])  # the longest: warm-up, and proof that it fits
            if cuda:
                torch.cuda.synchronize()
            passes, t0 = 0, time.perf_counter()
            while passes < 1 or time.perf_counter() - t0 < args.forward_seconds:
                for batch in batches:
                    encoder.forward(batch)  # returns numpy: one sync per pass
                passes += 1
            seconds = (time.perf_counter() - t0) / passes
        except torch.OutOfMemoryError:
            print(f"  batch {size}: out of memory", flush=True)
            break
        row = {"batch_size": size, "tokens_per_s": real / seconds,
               "mfu": flops / seconds / (peak * 1e12) if peak else None}  # fmt: skip
        rows.append(row)
        print(f"  forward-only, batch {size:>3}: {row['tokens_per_s']:,.0f} tokens/s"
              + (f", MFU {row['mfu']:.1%}" if peak else ""), flush=True)  # fmt: skip
    best = max(rows, key=lambda r: r["tokens_per_s"])
    return {
        "docs": len(texts),
        "real_tokens": real,
        "mean_length": real / len(ordered),
        "flop_per_token": flops / real,
        "sweep": rows,
        "best": best,
        # The bulk lane's tokenizer thread must outrun the model by a wide margin.
        "tokenizer_tokens_per_s": real / tokenize_s,
        "syncs_per_pass": count_syncs(encoder, ordered[-best["batch_size"] :]) if cuda else None,
    }


def count_syncs(encoder: Any, batch: Sequence[Any]) -> int:
    """Host-device synchronisations in one forward pass, as torch's sync debug mode sees
    them (the result copy is one; anything more stalls the host per batch)."""
    import torch

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            encoder.forward(list(batch))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in seen)


def memory_peak(device: str) -> dict[str, float]:
    import torch

    if device.startswith("cuda"):
        return {"allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
                "reserved_gib": torch.cuda.max_memory_reserved() / 2**30}  # fmt: skip
    return {"host_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_forward(model: Path, args: argparse.Namespace, workloads: dict[str, list[str]],
                peak: float | None) -> dict[str, Any]:  # fmt: skip
    import torch

    from es_embed.config import ModelSettings
    from es_embed.embed.encoder import load_encoder

    settings = ModelSettings(name=str(model), device=args.device, dtype=args.dtype,
                             max_length=MAX_LENGTH)  # fmt: skip
    encoder = load_encoder(settings)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out: dict[str, Any] = {"attention": encoder._model.config._attn_implementation}
    for name, texts in workloads.items():
        print(f"forward-only: {name}", flush=True)
        out[name] = forward_limit(encoder, args.gpu_shape, texts, args, peak)
    out["memory"] = memory_peak(args.device)
    del encoder
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


# ---- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gpu-shape", choices=sorted(SHAPES), default="qwen3-4b")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 on a CPU")
    p.add_argument("--corpus", default=None, help="SciFact corpus.jsonl (default: looked up)")
    p.add_argument("--docs", type=int, default=None, help="documents per workload")
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    p.add_argument("--forward-seconds", type=float, default=None)
    p.add_argument("--seconds", type=float, default=None, help="per server throughput point")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 8, 32, 128])  # fmt: skip
    p.add_argument("--spacing", type=float, default=0.1, help="seconds between queries")
    p.add_argument("--window", type=float, default=None, help="seconds of queries per run")
    p.add_argument("--no-unbounded", action="store_true", help="skip the unbounded server")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the peak table")
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads, here and in the servers (a CPU "
        "shared with other work: 1, or the intra-op threads wait on each other)",
    )
    p.add_argument("--out", default=os.environ.get("OUT") or str(HERE / "results"))
    args = p.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the servers
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    if args.dtype == "auto":
        args.dtype = "bfloat16" if cuda else "float32"
    # On a GPU: enough work per point to be steady; on a CPU: a proof that it all runs.
    args.docs = args.docs or (512 if cuda else 32)
    args.batch_sizes = args.batch_sizes or ([16, 32, 64] if cuda else [8, 16])
    args.forward_seconds = args.forward_seconds or (3.0 if cuda else 0.5)
    args.seconds = args.seconds or (8.0 if cuda else 2.0)
    args.window = args.window or (15.0 if cuda else 3.0)
    return args


def find_corpus(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    for candidate in (HERE / "data" / "scifact" / "corpus.jsonl",):
        if candidate.is_file():
            return candidate
    try:
        from devtools.datasets import shared_data_dir

        return shared_data_dir() / "scifact" / "corpus.jsonl"
    except ImportError:
        return None


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    args = parse_args()
    started = datetime.now(UTC)
    name = device_name(args.device)
    peak = args.peak_tflops or (peak_tflops(name) if args.device.startswith("cuda") else None)
    texts, source = corpus_texts(find_corpus(args.corpus), max(args.docs * 4, TOKENIZER_DOCS))
    workloads = {"512-token documents": long_texts(texts, args.docs),
                 "SciFact length mix": texts[: args.docs]}  # fmt: skip
    results: dict[str, Any] = {"started": started.isoformat(), "device": name, "peak_tflops": peak,
                               "shape": args.gpu_shape, "dtype": args.dtype, "texts": source,
                               "argv": sys.argv[1:], "load_average": os.getloadavg(),
                               "threads": args.threads}  # fmt: skip
    print(f"{name}; peak {peak or 'unknown'} TFLOP/s; {args.gpu_shape} in {args.dtype}; "
          f"texts: {source}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="es-embed-device-") as tmp:
        model = Path(tmp) / args.gpu_shape
        import torch

        dtype = getattr(torch, args.dtype)
        results["parameters"] = write_model(model, args.gpu_shape, texts, args.device, dtype)
        results["forward"] = run_forward(model, args, workloads, peak)
        results["server"] = asyncio.run(serving.run_servers(model, args, workloads, texts))
    results["seconds"] = (datetime.now(UTC) - started).total_seconds()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "device-suite.json").write_text(json.dumps(results, indent=2))
    text = serving.report(results, args, flop_per_token)
    (out / "device-suite.md").write_text(text + "\n")
    print("\n" + text + f"\n\nwrote {out / 'device-suite.md'} and .json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
