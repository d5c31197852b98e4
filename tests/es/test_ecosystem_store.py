"""The README's vector-store recipe on a real node: an index es-embed sets up and keeps filled
(documents written with the plain Elasticsearch client, vectors written by the follower of the
real sidecar app with MiniLM), searched through LangChain's store and the sidecar's embeddings.

``langchain-elasticsearch`` (1.0) requires ``elasticsearch<9``, which es-embed's own client
cannot share a virtual environment with, so it is not in the test extra. Its
``ElasticsearchStore`` is a thin wrapper: ``query_field``/``vector_query_field`` become the
``text_field``/``vector_field`` of ``elasticsearch.helpers.vectorstore.VectorStore``, which
builds and sends every query. That store runs here on every run; the same checks run through
``ElasticsearchStore`` itself where ``langchain_elasticsearch`` is importable, e.g. with
``pip install --no-deps --target /tmp/lc langchain-elasticsearch`` and ``PYTHONPATH=/tmp/lc``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.helpers.vectorstore import DenseVectorStrategy, VectorStore
from langchain_openai import OpenAIEmbeddings

from es_embed.cli import main as cli
from es_embed.config import load_settings
from tests.es.search_support import BOTH, DOCS, PARAPHRASE, RARE
from tests.model_fixtures import minilm_path
from tests.sidecar_thread import Sidecar, serving

pytestmark = pytest.mark.es

SERVED = "minilm"
FILL_SECONDS = 120  # the follower embeds 16 documents with MiniLM on a shared CPU
# The corpus of the search tests, with the text in `body` (LangChain's default is `text`).
CORPUS = {i: {"title": d["title"], "body": d["text"], "topic": d["topic"]} for i, d in DOCS.items()}


class Managed:
    def __init__(self, index: str, sidecar: Sidecar) -> None:
        self.index = index
        self.sidecar = sidecar


@pytest.fixture(scope="module")
def managed(
    es: Elasticsearch, es_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Managed]:
    """``es-embed setup``, then the sidecar with its follower, then documents from any client."""
    index, state = (f"test-eco-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("docs", "state"))
    config = tmp_path_factory.mktemp("eco") / "es-embed.yaml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "model": {"name": str(minilm_path()), "served_name": SERVED, "device": "cpu"},
                "elasticsearch": {"url": es_url},
                "indices": [
                    {"name": index, "text_fields": ["title", "body"], "vector_field": "embedding"}
                ],
                "follow": {"state_index": state, "poll_interval": 0.1},
            }
        )
    )
    try:
        assert cli(["setup", "--config", str(config)]) == 0
        with serving(load_settings(config, env={}), follow=True) as sidecar:
            ops: list[dict[str, Any]] = []
            for doc_id, doc in CORPUS.items():
                ops += [{"index": {"_index": index, "_id": doc_id}}, doc]
            assert not es.bulk(operations=ops, refresh=True)["errors"]
            wait_for_vectors(es, index, len(CORPUS))
            yield Managed(index, sidecar)
    finally:
        es.options(ignore_status=404).indices.delete(index=f"{index},{state}")
        es.options(ignore_status=404).indices.delete_index_template(name=f"es-embed-{index}*")
        es.options(ignore_status=404).cluster.delete_component_template(name=f"es-embed-{index}*")


def wait_for_vectors(es: Elasticsearch, index: str, count: int) -> None:
    deadline = time.monotonic() + FILL_SECONDS
    filled = {"exists": {"field": "_embed.hash"}}
    while es.indices.refresh(index=index) and es.count(index=index, query=filled)["count"] < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the follower did not fill {count} vectors in {FILL_SECONDS} s")
        time.sleep(0.2)


def query_embeddings(sidecar: Sidecar) -> OpenAIEmbeddings:
    # The README recipe: LangChain's embeddings, sending input_type "query" to the sidecar.
    return OpenAIEmbeddings(
        model=SERVED,
        base_url=sidecar.v1,
        api_key="unused",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
        model_kwargs={"extra_body": {"input_type": "query"}},
    )


# (es client, managed index, text field, vector field, hybrid) -> search(query, k) -> page texts
Search = Callable[[str, int], list[str]]
StoreFactory = Callable[[Elasticsearch, Managed, str, str, bool], Search]


def helpers_store(es: Elasticsearch, m: Managed, text: str, vector: str, hybrid: bool) -> Search:
    store = VectorStore(
        es,
        index=m.index,
        retrieval_strategy=DenseVectorStrategy(hybrid=hybrid),
        embedding_service=query_embeddings(m.sidecar),
        text_field=text,
        vector_field=vector,
    )
    return lambda q, k: [h["_source"].get(text, "") for h in store.search(query=q, k=k)]


def langchain_store(es: Elasticsearch, m: Managed, text: str, vector: str, hybrid: bool) -> Search:
    lc = pytest.importorskip(
        "langchain_elasticsearch",
        reason="langchain-elasticsearch requires elasticsearch<9; see this module's docstring",
    )
    store = lc.ElasticsearchStore(
        m.index,
        client=es,
        embedding=query_embeddings(m.sidecar),
        query_field=text,
        vector_query_field=vector,
        strategy=lc.DenseVectorStrategy(hybrid=hybrid),
    )
    return lambda q, k: [d.page_content for d in store.similarity_search(q, k=k)]


STORES = pytest.mark.parametrize(
    "make_store", [helpers_store, langchain_store], ids=["vectorstore-helper", "langchain"]
)


@STORES
def test_store_on_the_index_fields_finds_by_meaning(
    es: Elasticsearch, managed: Managed, make_store: StoreFactory
) -> None:
    search = make_store(es, managed, "body", "embedding", False)
    assert search(PARAPHRASE, 3)[0] == CORPUS["cat"]["body"]


@STORES
def test_store_defaults_text_and_vector_find_nothing(
    es: Elasticsearch, managed: Managed, make_store: StoreFactory
) -> None:
    assert make_store(es, managed, "text", "vector", False)(PARAPHRASE, 3) == []
    # The right vector field with the default text field: hits, every one of them empty.
    texts = make_store(es, managed, "text", "embedding", False)(PARAPHRASE, 3)
    assert texts == ["", "", ""]


@STORES
def test_store_hybrid_needs_the_paid_rrf_retriever(
    es: Elasticsearch, managed: Managed, make_store: StoreFactory
) -> None:
    licence = es.license.get()["license"]["type"]
    if licence not in ("basic", "standard", "gold"):
        pytest.skip(f"this node has a {licence} licence, which includes the rrf retriever")
    search = make_store(es, managed, "body", "embedding", True)
    with pytest.raises(ApiError) as info:
        search(BOTH, 3)
    # Basic licence: refused; a node without the rank-rrf module (the integ-test zip): unknown.
    refusals = {403: "non-compliant", 400: "unknown field [rrf]"}
    status = info.value.meta.status
    assert status in refusals and refusals[status] in str(info.value), info.value


def test_v1_search_is_the_hybrid_search_on_basic(managed: Managed) -> None:
    status, answer = managed.sidecar.post(
        "/v1/search", {"index": managed.index, "query": BOTH, "k": 3, "source": ["body"]}
    )
    assert status == 200, answer
    hits = answer["hits"]
    assert {h["_id"] for h in hits[:2]} == {"cat", "code"}, hits  # one from each leg
    code = next(h for h in hits if h["_id"] == "code")
    assert RARE in code["_source"]["body"] and code["legs"]["bm25"]["rank"] == 1
