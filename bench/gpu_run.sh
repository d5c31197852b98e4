#!/usr/bin/env bash
# Issue 13's GPU measurement on one lent H100/H200 (or any CUDA GPU), in under 8 minutes:
# bench/device_suite.py on a random-weight Qwen3-Embedding-4B-shaped bf16 model (no hub, no
# download): forward-only tokens/s, MFU, peak memory, host syncs per pass, tokenizer speed,
# `es-embed serve` at 1/8/32/128 clients on 512-token documents and the SciFact length mix,
# and single-query p50/p99 idle and under a 32-client bulk flood, bounded and unbounded.
# The tables go to $OUT/device-suite.md (JSON and the log beside them).
#
#   OUT=/tmp/out bench/gpu_run.sh                        # on the GPU machine, from anywhere
#   bench/gpu_run.sh --gpu-shape tiny --device cpu --threads 1   # the same, proved on a CPU
#
# Installs nothing from the network beyond what `pip install .` needs, and nothing at all
# when es-embed's dependencies are already there. On a machine without network whose Python
# lacks them (the lent device has torch and transformers but not elasticsearch), put their
# wheels in .whl/ first (README, GPU: "Measuring on a lent GPU"); they are installed from
# there with --no-index into a private folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if ! "$PY" -c "import elasticsearch, aiohttp, yaml, prometheus_client" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/es-embed-site .whl/*.whl
        export PYTHONPATH=/tmp/es-embed-site${PYTHONPATH:+:$PYTHONPATH}
    else
        "$PY" -m pip install -q '.[gpu]'
    fi
fi
# The SciFact corpus: ES_EMBED_DATA_DIR, bench/data/scifact or ../shared/data (else the suite
# uses synthetic texts of the same length mix, and says so).
{ command -v nvidia-smi >/dev/null && nvidia-smi; "$PY" -c "import torch, transformers; \
print('torch', torch.__version__, 'transformers', transformers.__version__)"; } \
    >"$OUT/environment.txt" 2>&1 || true
"$PY" bench/device_suite.py --out "$OUT" "$@" 2>&1 | tee "$OUT/device-suite.log"
