# syntax=docker/dockerfile:1
# The es-embed sidecar on python:3.11-slim: the `wheel` stage builds es-embed's wheel, the
# final stage pip-installs that wheel with its runtime dependencies (never the source tree),
# exactly as `make test`'s wheel smoke installs and runs it (devtools/wheel_smoke.py).
#
#   docker build -t es-embed .
#   docker run --gpus all -p 8080:8080 -v hf-cache:/var/cache/huggingface \
#     -v ./es-embed.yaml:/etc/es-embed/es-embed.yaml:ro es-embed
#
# torch from PyPI on linux/amd64 is the CUDA build (it bundles the CUDA libraries), so the
# image runs on a GPU host with the NVIDIA container toolkit and falls back to the CPU elsewhere.
# For a much smaller CPU-only image, build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# For a GPU host, add the [gpu] extra (accelerate: the weights load straight onto the GPU, never
# through host memory):
#   docker build --build-arg EXTRAS=gpu -t es-embed:gpu .

# ---- stage 1: the wheel (from the same three inputs the wheel smoke builds it from) ----
FROM python:3.11-slim AS wheel

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY es_embed ./es_embed
RUN pip wheel . --no-deps -w /wheels

# ---- stage 2: the sidecar, installed from that wheel ---------------------------------------
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
# Extras of the es-embed wheel to install with it: "" (none) or "gpu".
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Model weights live in a volume so a restart does not download them again.
    HF_HOME=/var/cache/huggingface \
    # Inside a container the API must listen on every interface, not the default 127.0.0.1.
    ES_EMBED_SERVER_HOST=0.0.0.0 \
    ES_EMBED_SERVER_PORT=8080

# An unprivileged user; it owns the model cache so a fresh named volume inherits that owner.
RUN useradd --system --uid 10001 --create-home --home-dir /home/es-embed es-embed \
    && mkdir -p /var/cache/huggingface /etc/es-embed \
    && chown es-embed /var/cache/huggingface

WORKDIR /home/es-embed

# torch first and on its own layer: it is by far the largest download and changes least.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" torch; \
    else \
        pip install torch; \
    fi

# Only the wheel crosses over; its package data (the Dev Tools templates setup renders)
# travels inside it.
COPY --from=wheel /wheels/ /tmp/wheels/
RUN wheel="$(ls /tmp/wheels/es_embed-*.whl)" \
    && pip install "${wheel}${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /tmp/wheels

# A default configuration so `docker run` works without a mount (no followed indices);
# docker-compose.yml mounts its own at the same path.
COPY <<EOF /etc/es-embed/es-embed.yaml
server:
  host: 0.0.0.0
  port: 8080
elasticsearch:
  url: http://elasticsearch:9200
EOF

USER es-embed
EXPOSE 8080

# python:3.11-slim has no curl; the standard library is enough for a health probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=5 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["es-embed"]
CMD ["serve", "--config", "/etc/es-embed/es-embed.yaml"]
