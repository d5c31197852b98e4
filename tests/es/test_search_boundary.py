"""Issue 14's search boundary on a real node, through the whole app (fake encoder): a filter
that reaches into another index is refused naming the clause, the secret never appears, and
the answer is the same whether the foreign document or index exists. Refusals that name
another index are withheld; hits carry no ``_embed`` record unless it is asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from es_embed.config import ElasticsearchSettings, IndexSettings
from es_embed.elastic.client import build_client
from es_embed.errors import EmbedError, ErrorKind
from es_embed.indices.resolve import text_only
from es_embed.search.execute import Searcher
from es_embed.search.spec import SearchSpec
from tests.api_support import Client, api_client, error_of, make_settings
from tests.es.search_support import text_and_vector

pytestmark = pytest.mark.es

SECRET = "sk-live-7d1e0c55-do-not-leak"
DIMS = 64  # the fake encoder's width


@pytest.fixture
def indices(es: Elasticsearch, index_name: str) -> Iterator[tuple[str, str]]:
    """(searched, secrets): the configured index and one the sidecar can read but was not given
    (both deleted by ``index_name``)."""
    secrets = f"{index_name}-secrets"
    es.indices.create(index=index_name, mappings=text_and_vector(DIMS, tags="keyword"))
    es.index(
        index=index_name,
        id="1",
        document={"title": "red fox", "text": "jumps", "tags": ["a"], "embedding": [0.125] * DIMS,
                  "_embed": {"hash": "h", "model": "fake-encoder", "dims": DIMS}},
    )  # fmt: skip
    es.index(index=secrets, id="s2", document={"api": {"key": SECRET}, "tags": [SECRET]})
    es.indices.refresh(index=f"{index_name},{secrets}")
    yield index_name, secrets


@pytest.fixture
async def client(es_url: str, indices: tuple[str, str]) -> AsyncIterator[Client]:
    settings = make_settings(
        elasticsearch={"url": es_url},
        indices=[{"name": indices[0], "text_fields": ["title", "text"]}],
    )
    async with api_client(settings) as c:
        yield c


async def search(client: Client, index: str, filter_: Any, **extra: Any) -> tuple[int, str]:
    body = {"index": index, "query": "fox", "mode": "bm25", "filter": filter_, **extra}
    resp = await client.post("/v1/search", json=body)
    return resp.status, await resp.text()


def shape_lookup(index: str, doc: str) -> dict[str, Any]:
    return {"geo_shape": {"f": {"indexed_shape": {"index": index, "id": doc, "path": "api.key"}}}}


def terms_lookup(index: str, doc: str) -> dict[str, Any]:
    return {"terms": {"tags": {"index": index, "id": doc, "path": "tags"}}}


@pytest.mark.parametrize(
    ("lookup", "param"),
    [
        (shape_lookup, "filter.geo_shape"),
        (lambda i, d: {"bool": {"must": [terms_lookup(i, d)]}}, "filter.bool.must[0].terms"),
    ],
)
async def test_the_issue_reproduction_reads_nothing_and_answers_no_question(
    client: Client, indices: tuple[str, str], lookup: Any, param: str
) -> None:
    docs, secrets = indices
    answers = []
    # The secret document, a missing document, a missing index: one and the same answer.
    for index, doc in ((secrets, "s2"), (secrets, "nope"), (f"{docs}-missing", "s2")):
        body = {"index": docs, "query": "fox", "mode": "bm25", "filter": lookup(index, doc)}
        resp = await client.post("/v1/search", json=body)
        text = await resp.text()
        assert SECRET not in text
        error = await error_of(resp, 400)
        assert error["param"] == param and error["code"] == "lookup_not_allowed"
        answers.append(text)
    assert answers[0] == answers[1] == answers[2]


async def test_the_same_index_cannot_be_searched_under_another_name(client: Client) -> None:
    resp = await client.post("/v1/search", json={"index": "*", "query": "fox", "mode": "bm25"})
    assert (await error_of(resp, 404))["param"] == "index"


async def test_a_refusal_naming_another_index_is_withheld(
    es_url: str, indices: tuple[str, str]
) -> None:
    """Past the boundary check (a spec built in code), Elasticsearch's own refusal of a lookup
    in a missing index names that index: it is replaced, not passed on as 'docs not found'."""
    docs, _ = indices
    es = build_client(ElasticsearchSettings(url=es_url))
    searcher = Searcher(es, _no_vectors, [text_only(IndexSettings(name=docs), "m")])
    spec = SearchSpec(index=docs, query="fox", mode="bm25",
                      filter=(terms_lookup("no-such-index-42", "s2"),))  # fmt: skip
    try:
        with pytest.raises(EmbedError) as info:
            await searcher.search(spec)
    finally:
        await es.close()
    assert info.value.kind is ErrorKind.INVALID_REQUEST and info.value.code == "search_rejected"
    assert "no-such-index-42" not in info.value.message and "is not shown" in info.value.message


async def test_errors_about_the_searched_index_still_explain(
    client: Client, indices: tuple[str, str]
) -> None:
    status, text = await search(client, indices[0], {"range": {"title": {"gte": {"x": 1}}}})
    assert status == 400 and "is not shown" not in text, text


async def test_hits_carry_no_embed_record_unless_asked(
    client: Client, indices: tuple[str, str]
) -> None:
    docs = indices[0]
    # (Elasticsearch 9 leaves dense vectors out of _source by itself, so only _embed is told.)
    for source, wanted in ((None, False), (True, False), (["*"], False), (["_embed", "t*"], True)):
        extra = {} if source is None else {"source": source}
        resp = await client.post(
            "/v1/search", json={"index": docs, "query": "fox", "mode": "bm25", **extra}
        )
        body = await resp.json()
        assert resp.status == 200, body
        (hit,) = body["hits"]
        assert ("_embed" in hit["_source"]) is wanted, (source, hit["_source"])
        assert hit["_source"]["title"] == "red fox"


async def _no_vectors(text: str, dims: int | None) -> Any:
    raise AssertionError("bm25 needs no vector")
