"""POST /v1/search validation: 400 naming the field, 404 naming the index (no node needed:
these are refused before Elasticsearch is asked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.errors import error_middleware
from es_embed.api.search import SEARCHER, post_search
from es_embed.config import IndexSettings
from es_embed.indices.resolve import text_only
from es_embed.search.execute import Searcher


class NoElasticsearch:
    """Any attribute access fails the test: validation must stop before Elasticsearch."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"Elasticsearch was called ({name})")


async def no_embedding(text: str, dims: int | None) -> np.ndarray:
    raise AssertionError("the query was embedded")


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    app = web.Application(middlewares=[error_middleware])
    searcher = Searcher(
        NoElasticsearch(), no_embedding, [text_only(IndexSettings(name="docs"), "m")]
    )  # type: ignore[arg-type]
    app[SEARCHER] = searcher
    app.router.add_post("/v1/search", post_search)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_unknown_index_is_404_naming_it(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/v1/search", json={"index": "nope", "query": "x"})
    assert resp.status == 404
    error = (await resp.json())["error"]
    assert error["param"] == "index" and "'nope'" in error["message"] and "docs" in error["message"]
    assert error["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "x"}, "index"),
        ({"index": "docs"}, "query"),
        ({"index": "docs", "query": "x", "mode": "dense"}, "mode"),
        ({"index": "docs", "query": "x", "k": -1}, "k"),
        ({"index": "docs", "query": "x", "from": "2"}, "from"),
        ({"index": "docs", "query": "x", "filter": 3}, "filter"),
        ({"index": "docs", "query": "x", "weights": {"knn": "high"}}, "weights.knn"),
        ({"index": "docs", "query": "x", "source": 1}, "source"),
        ({"index": "docs", "query": "x", "limit": 3}, "limit"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    client: TestClient[Any, Any], body: dict[str, Any], param: str
) -> None:
    resp = await client.post("/v1/search", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_body_that_is_not_json_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/v1/search", data=b"{nope", headers={"content-type": "application/json"}
    )
    assert resp.status == 400
    assert "not valid JSON" in (await resp.json())["error"]["message"]
