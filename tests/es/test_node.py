"""The real node answers the queries es-embed is built on: kNN on a dense_vector, BM25, auth."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch, AuthenticationException, Elasticsearch

from devtools.es_node import Node, cache_dir, free_port

DIMS = 32
DOCS = {
    "fox": "The quick brown fox jumps over the lazy dog",
    "harbour": "Fishing boats rest in the harbour at dawn",
    "volcano": "Lava from the volcano reached the sea",
}


def _vectors() -> dict[str, list[float]]:
    # Three random unit vectors in 32 dimensions are nearly orthogonal, so the nearest
    # neighbour of a slightly perturbed copy of one of them is that one.
    rng = np.random.default_rng(7)
    out = {}
    for doc_id in DOCS:
        v = rng.standard_normal(DIMS)
        out[doc_id] = (v / np.linalg.norm(v)).tolist()
    return out


def _create_and_fill(es: Elasticsearch, index: str, vectors: dict[str, list[float]]) -> None:
    es.indices.create(
        index=index,
        mappings={
            "properties": {
                "text": {"type": "text"},
                "embedding": {
                    "type": "dense_vector",
                    "dims": DIMS,
                    "index": True,
                    "similarity": "cosine",
                },
            }
        },
    )
    for doc_id, text in DOCS.items():
        es.index(index=index, id=doc_id, document={"text": text, "embedding": vectors[doc_id]})
    es.indices.refresh(index=index)


def test_knn_and_bm25_find_the_expected_document(es: Elasticsearch, index_name: str) -> None:
    vectors = _vectors()
    _create_and_fill(es, index_name, vectors)
    mapping = es.indices.get_mapping(index=index_name)[index_name]["mappings"]
    assert mapping["properties"]["embedding"]["dims"] == DIMS

    rng = np.random.default_rng(11)
    for target in DOCS:
        query = np.asarray(vectors[target]) + 0.05 * rng.standard_normal(DIMS)
        resp = es.search(
            index=index_name,
            knn={
                "field": "embedding",
                "query_vector": query.tolist(),
                "k": 3,
                "num_candidates": 10,
            },
            source=False,
        )
        hits = resp["hits"]["hits"]
        assert [h["_id"] for h in hits][0] == target
        assert len(hits) == 3
        assert hits[0]["_score"] > hits[1]["_score"]

    resp = es.search(index=index_name, query={"match": {"text": "volcano lava"}})
    hits = resp["hits"]["hits"]
    assert [h["_id"] for h in hits] == ["volcano"]

    resp = es.search(index=index_name, query={"match": {"text": "harbour boats"}})
    assert resp["hits"]["hits"][0]["_id"] == "harbour"


async def test_async_client_sees_the_same_documents(
    es: Elasticsearch, aes: AsyncElasticsearch, index_name: str
) -> None:
    _create_and_fill(es, index_name, _vectors())
    resp = await aes.search(index=index_name, query={"match": {"text": "fox"}})
    assert [h["_id"] for h in resp["hits"]["hits"]] == ["fox"]
    count = await aes.count(index=index_name)
    assert count["count"] == len(DOCS)


def test_root_answers_the_node_version(es: Elasticsearch, es_node: Node) -> None:
    info = es.info()
    nodes = es.nodes.info(node_id="_local")["nodes"]
    assert info["version"]["number"] == next(iter(nodes.values()))["version"]
    assert info["version"]["number"] == es_node.version
    assert es.ping()


@pytest.mark.security
def test_secure_node_needs_credentials_and_issues_api_keys(es_secure_node: Node) -> None:
    anonymous = Elasticsearch(es_secure_node.url)
    with pytest.raises(AuthenticationException):
        anonymous.search(index="*")
    anonymous.close()

    admin = Elasticsearch(**es_secure_node.client_kwargs())
    assert admin.security.authenticate()["username"] == "elastic"
    key = admin.security.create_api_key(name="es-embed-test", expiration="1h")
    admin.close()

    with Elasticsearch(es_secure_node.url, api_key=key["encoded"]) as by_key:
        me = by_key.security.authenticate()
    assert me["authentication_type"] == "api_key"
    assert me["api_key"]["name"] == "es-embed-test"


@pytest.mark.slow
def test_dev_command_starts_and_stops_a_node_leaving_nothing() -> None:
    if os.environ.get("ES_URL"):
        pytest.skip("ES_URL is set: the dev command would only check that node")
    port = free_port()
    root = Path(__file__).resolve().parents[2]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devtools.es_node", *args, "--port", str(port)],
            cwd=root, capture_output=True, text=True, timeout=180,
        )  # fmt: skip

    started = run("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"http://127.0.0.1:{port}" in started.stdout
    status = run("status")
    assert status.returncode == 0 and "Elasticsearch 9." in status.stdout, status.stdout

    stopped = run("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert run("status").returncode == 1
    marker = f"es-embed-node-{port}-"
    leftovers = [
        pid for pid in os.listdir("/proc") if pid.isdigit() and marker in _cmdline(pid) + _cwd(pid)
    ]
    assert leftovers == []
    assert not list(Path(tempfile.gettempdir()).glob(f"{marker}*"))
    assert not list(cache_dir().glob(f"node-{port}.*"))  # state file and log


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _cwd(pid: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""
