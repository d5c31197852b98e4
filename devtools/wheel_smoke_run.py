"""The wheel smoke's steps 3-8: every ``es-embed`` command, installed from the wheel, run
from a directory outside the checkout against one test node and the offline MiniLM.

One node and one ``serve``, started early: its model loads while the commands that load
their own (ingest, backfill) run, a few at a time (``together``), and ``es-embed search``
uses its model (``--server``), so the whole stays within a few minutes on a loaded
two-core machine. Three indices: ``INDEX`` is written with the plain client while
``serve`` follows it; ``LOAD`` is filled by ``ingest`` (the sample corpus, then a folder)
while ``serve`` follows it too (and skips what ingest embedded), and is searched by
``es-embed search``; ``BACKFILL``, which ``serve`` does not follow, is written with the
plain client and filled by ``backfill`` (and ``--retry-failed``).
"""

from __future__ import annotations

import contextlib
import copy
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from elasticsearch import Elasticsearch

from devtools.demo import http_json, minilm_dir, sidecar_config, wait_embedded, wait_healthy
from devtools.es_node import Node, free_port, start_node
from devtools.wheel_smoke_cli import (
    DIMS,
    EXPECTED_TOP,
    QUERY,
    Installed,
    SmokeFailure,
    check_offline,
    check_search,
    check_setup_print,
    check_status_owners,
    clean_env,
    say,
    together,
)
from devtools.wheel_smoke_load import (
    REFUSING_MODEL,
    check_backfill,
    check_ingest_folder,
    check_ingest_jsonl,
    check_retry_failed,
    write_backfill_docs,
)

INDEX = "es-embed-wheel-smoke"
LOAD = "es-embed-wheel-load"
BACKFILL = "es-embed-wheel-backfill"
INDICES = (INDEX, LOAD, BACKFILL)
PRINTED = "es-embed-wheel-printed"  # only ever in setup --print's config: never created
REPLICA = "wheel-smoke"  # follow.replica_id: the lease owner es-embed status must name
# follow.state_index: its own, so a node reused through ES_URL (after a run that stopped
# half-way) holds no checkpoint, lease or failure record of an earlier run
STATE = "es-embed-wheel-smoke-state"
DOCS = {
    "s01": {"title": "Making sourdough bread", "text": "Feed the starter flour and water."},
    "s04": {
        "title": "How vaccines train the immune system",
        "text": "A harmless copy of a pathogen teaches memory cells to respond quickly.",
    },
}


def index_entries(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "text_fields": ["title", "text"], "dims": DIMS} for name in names]


def write_configs(node: Node, port: int, work: Path) -> dict[str, Path]:
    """The commands' config (the three indices) and three variants of it: ``serve`` follows
    INDEX and LOAD only (BACKFILL is left to the backfill commands, which run meanwhile);
    ``refusing``'s model refuses inputs longer than its max_length instead of truncating
    them; ``printed`` holds PRINTED alone."""
    raw = sidecar_config(node, port, INDEX)
    raw["indices"] = index_entries(*INDICES)
    raw["follow"].update(replica_id=REPLICA, state_index=STATE)
    refusing = copy.deepcopy(raw)
    refusing["model"].update(REFUSING_MODEL)
    variants = {
        "commands": raw,
        "serve": {**raw, "indices": index_entries(INDEX, LOAD)},
        "refusing": refusing,
        "printed": {**raw, "indices": index_entries(PRINTED)},
    }
    paths = {}
    for name, settings in variants.items():
        paths[name] = work / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(settings))
    return paths


def offline_config(work: Path) -> Path:
    """For the checks that must refuse before reaching out: nothing listens on port 9."""
    raw = {
        "model": {"name": minilm_dir(), "served_name": "all-MiniLM-L6-v2"},
        "elasticsearch": {"url": "http://127.0.0.1:9"},
        "indices": index_entries(*INDICES),
    }
    path = work / "offline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@contextlib.contextmanager
def serving(venv: Path, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``es-embed serve``; on leaving, SIGTERM, and it must exit 0 (its log tail if not)."""
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(venv / "bin" / "es-embed"), "serve", "--config", str(config)],
            cwd=config.parent, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield server
    except BaseException:
        server.kill()
        server.wait(30)
        raise
    server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
        raise SmokeFailure("es-embed serve did not exit within 60 s of SIGTERM") from None
    if code != 0:
        raise SmokeFailure(f"es-embed serve exited {code} after SIGTERM (want 0)")


def check_embeddings(url: str) -> None:
    body = http_json(url + "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ["hello"]})
    vector = body["data"][0]["embedding"]
    if len(vector) != DIMS:
        raise SmokeFailure(f"/v1/embeddings answered a vector of length {len(vector)}, not {DIMS}")


def check_serving(url: str, server: subprocess.Popen[bytes], es: Elasticsearch) -> None:
    wait_healthy(url, server, timeout=300)
    check_embeddings(url)
    check_follow_and_search(url, es)


def check_follow_and_search(url: str, es: Elasticsearch) -> None:
    for doc_id, doc in DOCS.items():
        es.index(index=INDEX, id=doc_id, document=doc)
    wait_embedded(es, INDEX, len(DOCS), timeout=60)
    stored = es.get(index=INDEX, id=EXPECTED_TOP, source_exclude_vectors=False)["_source"]
    if len(stored.get("embedding") or []) != DIMS or not stored.get("_embed", {}).get("hash"):
        raise SmokeFailure(f"the follower wrote {stored!r}, not a {DIMS}-dim vector with _embed")
    result = http_json(url + "/v1/search", {"index": INDEX, "query": QUERY, "mode": "hybrid"})
    knn = {h["_id"]: h["legs"]["knn"]["rank"] for h in result["hits"] if "knn" in h["legs"]}
    if knn.get(EXPECTED_TOP) != 1:
        raise SmokeFailure(f"/v1/search: kNN ranks {knn} for {QUERY!r}, want {EXPECTED_TOP} first")


def check_print_applies_nothing(cli: Installed, printed: Path, es: Elasticsearch) -> None:
    check_setup_print(cli, printed, [PRINTED])
    template = f"es-embed-{PRINTED}"
    if (
        es.indices.exists(index=PRINTED)
        or es.cluster.exists_component_template(name=template)
        or es.indices.exists_index_template(name=template)
    ):
        raise SmokeFailure(f"es-embed setup --print created {PRINTED} or its templates")


def smoke(venv: Path, work: Path) -> None:
    """Steps 3-8. The checks that need no node run while it starts."""
    cli = Installed(venv, work)
    say("3/8 --help and a bad argument of every command (while Elasticsearch starts)")
    with ThreadPoolExecutor(max_workers=1) as pool:
        offline = pool.submit(check_offline, cli, offline_config(work), LOAD)
        with start_node() as node:
            say(f"  Elasticsearch {node.version} at {node.url} ({node.source})")
            say(f"  {offline.result()} --help and bad-argument runs: exit codes and lines right")
            es = Elasticsearch(**node.client_kwargs())
            ours = ",".join((*INDICES, STATE))
            try:
                es.indices.delete(index=ours, ignore_unavailable=True)
                against_node(cli, node, es)
            finally:
                es.indices.delete(index=ours, ignore_unavailable=True)
                es.close()


def against_node(cli: Installed, node: Node, es: Elasticsearch) -> None:
    port = free_port()
    configs = write_configs(node, port, cli.work)
    config = configs["commands"]
    say("4/8 es-embed setup")
    cli("setup", "--config", str(config))
    write_backfill_docs(es, BACKFILL)
    log = cli.work.parent / "serve.log"
    url = f"http://127.0.0.1:{port}"
    try:
        with serving(cli.venv, configs["serve"], log) as server:
            say("5/8 es-embed serve starting; meanwhile at once: ingest FILE.jsonl, ingest DIR, "
                "backfill (one document refused), setup --print")  # fmt: skip
            together(
                lambda: check_ingest_jsonl(cli, config, es, LOAD),
                lambda: check_ingest_folder(cli, config, es, LOAD),
                lambda: check_backfill(cli, configs["refusing"], config, es, BACKFILL),
                lambda: check_print_applies_nothing(cli, configs["printed"], es),
            )
            say("6/8 backfill --retry-failed; meanwhile serve: /health, /v1/embeddings, follow, "
                "/v1/search")  # fmt: skip
            together(
                lambda: check_retry_failed(cli, config, es, BACKFILL),
                lambda: check_serving(url, server, es),
            )
            say("7/8 es-embed status (lease owners), search --server (--json, --dev-console, text)")
            together(
                lambda: check_status_owners(
                    cli, config, {INDEX: REPLICA, LOAD: REPLICA, BACKFILL: "-"}
                ),
                lambda: check_search(cli, config, LOAD, url),
            )
            say("8/8 SIGTERM")
    except BaseException:
        tail = log.read_text(errors="replace").strip().splitlines()[-30:] if log.exists() else []
        print("---- es-embed serve log (tail) ----", *tail, "----", sep="\n", file=sys.stderr)
        raise
