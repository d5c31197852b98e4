"""POST /v1/rerank through the real app with FakeReranker: the official cohere client, the
answer's shape, and every refusal the embeddings route also makes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api_support import (
    Client,
    api_client,
    assert_refusal,
    error_of,
    make_settings,
    until_queued,
)
from tests.fakes import FakeReranker

QUERY = "capital of france"
DOCUMENTS = [
    "Berlin is the capital of Germany.",  # 2 of 3 query words: capital, of
    "Paris is the capital of France.",  # 3 of 3
    "Bananas are yellow.",  # 0 of 3
    "France exports wine.",  # 1 of 3
]
BEST_FIRST = [1, 0, 3, 2]


def expected_scores(
    query: str, documents: list[str], instruction: str | None = None
) -> list[float]:
    fake = FakeReranker()
    return [float(s) for s in fake.forward(fake.tokenize_pairs(query, documents, instruction))]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with api_client(reranker=FakeReranker()) as c:
        yield c


async def rerank(client: Client, **body: Any) -> dict[str, Any]:
    resp = await client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, **body})
    answer: dict[str, Any] = await resp.json()
    assert resp.status == 200, answer
    return answer


async def test_cohere_client_gets_ranked_results() -> None:
    import cohere

    settings = make_settings(server={"api_keys": ["secret"]})
    async with api_client(settings, reranker=FakeReranker()) as c:
        url = str(c.make_url("")).rstrip("/")
        async with cohere.AsyncClient(api_key="secret", base_url=url) as co:
            answer = await co.rerank(
                model="fake-reranker", query=QUERY, documents=DOCUMENTS, top_n=3
            )
            short = await co.rerank(
                query=QUERY, documents=[{"text": d} for d in DOCUMENTS], return_documents=False
            )
    scores = expected_scores(QUERY, DOCUMENTS)
    assert [r.index for r in answer.results] == BEST_FIRST[:3]
    assert [r.relevance_score for r in answer.results] == pytest.approx(
        [scores[i] for i in BEST_FIRST[:3]]
    )
    assert [r.document.text for r in answer.results if r.document] == [
        DOCUMENTS[i] for i in BEST_FIRST[:3]
    ]
    assert [r.index for r in short.results] == BEST_FIRST
    assert all(r.document is None for r in short.results)


async def test_answer_shape_best_first_with_documents_and_usage(client: Client) -> None:
    body = await rerank(client, model="fake-reranker")
    assert set(body) == {"id", "model", "results", "usage"}
    assert body["model"] == "fake-reranker" and body["id"].startswith("rerank-")
    scores = expected_scores(QUERY, DOCUMENTS)
    assert body["results"] == [
        {
            "index": i,
            "relevance_score": pytest.approx(scores[i]),
            "document": {"text": DOCUMENTS[i]},
        }
        for i in BEST_FIRST
    ]
    pairs = FakeReranker().tokenize_pairs(QUERY, DOCUMENTS)
    assert body["usage"] == {"total_tokens": sum(len(t.ids) for t in pairs)}


async def test_top_n_and_return_documents(client: Client) -> None:
    body = await rerank(client, top_n=2, return_documents=False)
    assert [set(r) for r in body["results"]] == [{"index", "relevance_score"}] * 2
    assert [r["index"] for r in body["results"]] == BEST_FIRST[:2]
    more = await rerank(client, top_n=50)  # more than sent: all of them, as Cohere does
    assert [r["index"] for r in more["results"]] == BEST_FIRST


async def test_document_objects_come_back_as_sent_and_ties_keep_order(client: Client) -> None:
    documents = [{"text": "bananas", "id": "a"}, "yellow bananas", {"text": "apples", "id": "c"}]
    resp = await client.post("/v1/rerank", json={"query": "paris", "documents": documents})
    body = await resp.json()
    assert resp.status == 200, body
    # Every score is 0: equal scores keep the order they were sent in.
    assert [r["index"] for r in body["results"]] == [0, 1, 2]
    assert [r["document"] for r in body["results"]] == [
        {"text": "bananas", "id": "a"},
        {"text": "yellow bananas"},
        {"text": "apples", "id": "c"},
    ]


async def test_instruction_replaces_the_configured_one(client: Client) -> None:
    task = "prefer wine"
    body = await rerank(client, instruction=task)
    scores = expected_scores(QUERY, DOCUMENTS, task)
    assert scores != expected_scores(QUERY, DOCUMENTS)
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == pytest.approx(
        dict(enumerate(scores))
    )


async def test_over_long_documents_are_cut_and_reported_in_usage() -> None:
    long_doc = "paris " + " ".join(f"word{i}" for i in range(40)) + " capital"
    async with api_client(reranker=FakeReranker(max_length=12)) as c:
        resp = await c.post("/v1/rerank", json={"query": QUERY, "documents": [long_doc, "x"]})
        body = await resp.json()
    assert resp.status == 200, body
    assert body["usage"] == {"total_tokens": 12 + 6, "truncated_inputs": 1}
    # The cut document lost "capital": only what fits is scored.
    assert body["results"][0]["relevance_score"] == 0.0


# (body, status, param, words the message must contain)
BAD_INPUTS: list[tuple[Any, int, str | None, tuple[str, ...]]] = [
    ({"documents": ["a"]}, 400, "query", ("required",)),
    ({"query": 3, "documents": ["a"]}, 400, "query", ("string", "number")),
    ({"query": "", "documents": ["a"]}, 400, "query", ("empty",)),
    ({"query": "q\ud800", "documents": ["a"]}, 400, "query", ("surrogate",)),
    ({"query": "q"}, 400, "documents", ("required",)),
    ({"query": "q", "documents": []}, 400, "documents", ("empty list",)),
    ({"query": "q", "documents": "a"}, 400, "documents", ("list", "string")),
    ({"query": "q", "documents": ["a", ""]}, 400, "documents[1]", ("documents[1]", "empty")),
    ({"query": "q", "documents": ["a", 7]}, 400, "documents[1]", ("string", "number")),
    ({"query": "q", "documents": [{"title": "a"}]}, 400, "documents[0].text", ("without text",)),
    ({"query": "q", "documents": [{"text": 5}]}, 400, "documents[0].text", ("string",)),
    ({"query": "q", "documents": ["a"] * 5}, 413, "documents", ("5 items", "max_inputs (4)")),
    ({"query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n", ("at least 1", "0")),
    ({"query": "q", "documents": ["a"], "top_n": "2"}, 400, "top_n", ("whole number",)),
    ({"query": "q", "documents": ["a"], "top_n": True}, 400, "top_n", ("whole number",)),
    ({"query": "q", "documents": ["a"], "return_documents": 1}, 400, "return_documents", ()),
    ({"query": "q", "documents": ["a"], "instruction": " "}, 400, "instruction", ("non-empty",)),
    ({"query": "q", "documents": ["a"], "rank_fields": ["t"]}, 400, "rank_fields", ("unknown",)),
    ({"query": "q", "documents": ["a"], "model": "rerank-v3.5"}, 404, "model", ("'rerank-v3.5'",)),
    ({"query": "q", "documents": ["a"], "model": "fake-encoder"}, 404, "model", ("fake-reranker",)),
    ({"query": "q", "documents": ["a"], "model": 3}, 400, "model", ("string",)),
    (["q"], 400, None, ("JSON object", "array")),
]


@pytest.mark.parametrize(("body", "status", "param", "words"), BAD_INPUTS)
async def test_bad_input_is_refused_naming_the_field(
    body: Any, status: int, param: str | None, words: tuple[str, ...]
) -> None:
    settings = make_settings(server={"max_inputs": 4})
    async with api_client(settings, reranker=FakeReranker()) as c:
        error = await error_of(await c.post("/v1/rerank", json=body), status)
    assert_refusal(error, status, param, words)


async def test_malformed_body_is_400(client: Client) -> None:
    resp = await client.post(
        "/v1/rerank", data=b'{"query": "x"', headers={"Content-Type": "application/json"}
    )
    assert (await error_of(resp, 400))["code"] == "invalid_json"


async def test_instruction_is_refused_by_a_cross_encoder() -> None:
    async with api_client(reranker=FakeReranker(family="cross-encoder")) as c:
        body = {"query": "q", "documents": ["a"], "instruction": "Find"}
        error = await error_of(await c.post("/v1/rerank", json=body), 400)
    assert error["param"] == "instruction" and "cross-encoder" in error["message"]


async def test_without_a_reranker_the_route_is_404_naming_the_model() -> None:
    async with api_client() as c:
        body = {"query": "q", "documents": ["a"], "model": "BAAI/bge-reranker-v2-m3"}
        error = await error_of(await c.post("/v1/rerank", json=body), 404)
        models = (await (await c.get("/v1/models")).json())["data"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "'BAAI/bge-reranker-v2-m3'" in error["message"]
    assert "reranker.name" in error["message"]
    assert [m["id"] for m in models] == ["fake-encoder"]


async def test_models_and_health_list_the_reranker(client: Client) -> None:
    models = (await (await client.get("/v1/models")).json())["data"]
    assert [m["id"] for m in models] == ["fake-encoder", "fake-reranker"]
    assert models[1]["task"] == "rerank" and models[1]["family"] == "qwen3"
    assert models[1]["max_length"] == 64
    health = await (await client.get("/health")).json()
    assert health["reranker"] == "fake-reranker"


async def test_reranker_failure_is_503_then_recovers() -> None:
    reranker = FakeReranker()
    settings = make_settings(batching={"probe_interval_seconds": 0.05})
    async with api_client(settings, reranker=reranker) as c:
        # A real fault: running out of memory is not one (it splits the batch, or is a 413).
        reranker.failure = RuntimeError("CUDA error: an illegal memory access was encountered")
        body = {"query": "q", "documents": ["a"]}
        error = await error_of(await c.post("/v1/rerank", json=body), 503)
        assert "illegal memory access" in error["message"] and "reranker" in error["message"]
        assert (await c.get("/health")).status == 503
        reranker.failure = None  # the probe runs the reranker, which failed: now it works
        for _ in range(200):
            if (await c.get("/health")).status == 200:
                break
            await asyncio.sleep(0.02)
        assert (await c.post("/v1/rerank", json=body)).status == 200


async def test_full_query_lane_is_429_with_retry_after() -> None:
    # One pair per forward pass, each ~0.5 s: the query lane (2 slots) stays occupied.
    reranker = FakeReranker(seconds_per_token=0.05)
    settings = make_settings(
        batching={"query_queue": 2, "max_batch_size": 1, "retry_after_seconds": 3}
    )
    async with api_client(settings, reranker=reranker) as c:
        documents = ["a b c d", "e f g h", "i j k l"]
        first = asyncio.create_task(
            c.post("/v1/rerank", json={"query": "q", "documents": documents})
        )
        await until_queued(c, "query")
        resp = await c.post("/v1/rerank", json={"query": "q", "documents": ["x", "y"]})
        error = await error_of(resp, 429)
        assert resp.headers["Retry-After"] == "3"
        assert "query queue is full" in error["message"]
        assert (await first).status == 200
