"""The bad input matrix over the HTTP endpoints (issue 5 item 3): every row asserts the status,
the OpenAI envelope, the field named and the words of the message.

Rows that live elsewhere (not repeated here):
- tests/unit/test_api_embeddings.py: /v1/embeddings field by field (missing/empty input,
  wrong types in input, token ids, lone surrogates, unknown model, dimensions out of range and
  of the wrong type, encoding_format, input_type, instruction, unknown field, max_inputs),
  malformed/invalid UTF-8 bodies, body over max_body_bytes, input over max_length under
  truncation=error, unknown route and wrong method, control characters accepted as text.
- tests/unit/test_search_api.py: /v1/search field by field (index, query, mode, k, from,
  filter, weights, source, unknown field) and unknown index (404).
- tests/unit/test_api_auth.py: missing or wrong API key (401).
- tests/unit/test_config.py: config file typos, wrong types and missing keys.

Here: the rows every endpoint must answer the same way, and the /v1/search rows that reach
the model (the query is embedded) but must still be a 4xx naming the field. The app's
Elasticsearch URL points at a closed port: a row that reached Elasticsearch would answer
5xx, so each 4xx here also proves nothing was sent to (or written into) Elasticsearch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api_support import Client, api_client, error_of, make_settings
from tests.fakes import FakeEncoder

ENDPOINTS = ("/v1/embeddings", "/v1/search")
GOOD = {"/v1/embeddings": {"input": "hello"}, "/v1/search": {"index": "docs", "query": "hello"}}
BODY_LIMIT = 4096


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    settings = make_settings(
        server={"max_body_bytes": BODY_LIMIT},
        model={"truncation": "error"},
        elasticsearch={"url": "http://127.0.0.1:9", "request_timeout": 2},
        indices=[{"name": "docs", "dims": 32}],
    )
    async with api_client(settings, FakeEncoder(max_length=16)) as c:
        yield c


def _raw(body: bytes) -> dict[str, Any]:
    return {"data": body, "headers": {"Content-Type": "application/json"}}


# (name, request kwargs, status, words in the message)
EVERY_ENDPOINT: list[tuple[str, dict[str, Any], int, tuple[str, ...]]] = [
    ("truncated JSON", _raw(b'{"input": "x"'), 400, ("not valid JSON",)),
    ("single quotes", _raw(b"{'a': 1}"), 400, ("not valid JSON",)),
    ("empty body", _raw(b""), 400, ("not valid JSON",)),
    (
        "invalid UTF-8",
        _raw(b'{"input": "caf\xe9", "query": "caf\xe9"}'),
        400,
        ("not valid UTF-8", "byte 14", "0xe9"),
    ),  # fmt: skip
    ("JSON array", {"json": ["hello"]}, 400, ("JSON object",)),
    ("JSON string", {"json": "hello"}, 400, ("JSON object",)),
    ("JSON null", _raw(b"null"), 400, ("JSON object",)),
    (
        "over the body limit",
        {"json": {"input": "w " * BODY_LIMIT}},
        413,
        ("server.max_body_bytes", "4,096 bytes"),
    ),  # fmt: skip
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [row[1:] for row in EVERY_ENDPOINT],
    ids=[row[0] for row in EVERY_ENDPOINT],
)
async def test_every_endpoint_refuses_bad_bodies(
    client: Client, endpoint: str, kwargs: dict[str, Any], status: int, words: tuple[str, ...]
) -> None:
    error = await error_of(await client.post(endpoint, **kwargs), status)
    for word in words:
        assert word in error["message"], (word, error)
    assert error["type"] == "invalid_request_error"
    # The same server still answers a good request: a bad one poisons nothing.
    if endpoint == "/v1/embeddings":
        assert (await client.post(endpoint, json=GOOD[endpoint])).status == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_unknown_field_is_named(client: Client, endpoint: str) -> None:
    body = {**GOOD[endpoint], "dimesnions": 32}
    error = await error_of(await client.post(endpoint, json=body), 400)
    assert error["param"] == "dimesnions" and "unknown field" in error["message"], error


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_wrong_method_is_405_naming_post(client: Client, endpoint: str) -> None:
    resp = await client.get(endpoint)
    error = await error_of(resp, 405)
    assert "POST" in error["message"] and resp.headers["Allow"] == "POST"


# /v1/search rows whose query reaches the model (knn/hybrid embed it) or that the spec checks.
# (name, body, status, param, words)
SEARCH_ROWS: list[tuple[str, dict[str, Any], int, str | None, tuple[str, ...]]] = [
    ("empty query", {"query": ""}, 400, "query", ("non-empty",)),
    ("blank query", {"query": "   "}, 400, "query", ("non-empty",)),
    ("query not a string", {"query": 7}, 400, "query", ("string",)),
    ("query a list", {"query": ["a", "b"]}, 400, "query", ("string",)),
    ("index not a string", {"index": ["docs"]}, 400, "index", ("string",)),
    ("unknown index", {"index": "nope"}, 404, "index", ("'nope'", "docs")),
    ("k zero", {"k": 0}, 400, "k", ("k must be",)),
    ("k a string", {"k": "10"}, 400, "k", ("integer",)),
    ("k a boolean", {"k": True}, 400, "k", ("integer",)),
    ("huge k", {"k": 10**9}, 400, "k", ("k (1000000000)", "window (100)")),
    (
        "lone surrogate in query",
        {"query": "x\ud800y", "mode": "knn"},
        400,
        "query",
        ("surrogate",),
    ),  # fmt: skip
    (
        "query over max_length (truncation=error)",
        {"query": " ".join(f"w{i}" for i in range(40)), "mode": "knn"},
        400,
        "query",
        ("query has 41 tokens", "model.max_length"),
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [row[1:] for row in SEARCH_ROWS],
    ids=[row[0] for row in SEARCH_ROWS],
)
async def test_search_rows(
    client: Client, body: dict[str, Any], status: int, param: str | None, words: tuple[str, ...]
) -> None:
    error = await error_of(await client.post("/v1/search", json={**GOOD["/v1/search"], **body}),
                           status)  # fmt: skip
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], (word, error)


async def test_control_characters_are_text_on_both_endpoints(client: Client) -> None:
    text = "tab\tnul\x00bell\x07 escape\x1b[31m"
    resp = await client.post("/v1/embeddings", json={"input": text})
    assert resp.status == 200
    # For search they are refused by nothing but reach Elasticsearch, which is down here:
    # a clear 503 naming Elasticsearch, never a 500.
    resp = await client.post("/v1/search", json={"index": "docs", "query": text, "mode": "bm25"})
    body = await resp.json()
    assert resp.status in (502, 503), body
    assert "Elasticsearch" in body["error"]["message"], body
