"""The bounded JSON reader (``strict_json``) and issue 14's 500s, now 400s naming the field:
a 5,000-digit integer, a 100,000-deep body, a lone surrogate in ``instruction``, NaN and
1e999, linear weights of 1.7e308. None of them may log a traceback."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from es_embed import strict_json
from es_embed.api.errors import error_middleware
from es_embed.api.search import SEARCHER, post_search
from es_embed.config import IndexSettings
from es_embed.errors import EmbedError, ErrorKind
from es_embed.indices.resolve import text_only
from es_embed.search.execute import Searcher
from tests.api_support import Client, api_client, error_of
from tests.unit.test_search_api import NoElasticsearch, no_embedding

HUGE = "9" * 5000
DEEP = 100_000


@pytest.fixture(autouse=True)
def no_traceback(caplog: pytest.LogCaptureFixture) -> Any:
    """Every test here ends with no ERROR record (the 500 path logs one with a traceback)."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.fixture
async def embeddings() -> AsyncIterator[Client]:
    async with api_client() as c:
        yield c


@pytest.fixture
async def search() -> AsyncIterator[Client]:
    app = web.Application(middlewares=[error_middleware])
    searcher = Searcher(
        NoElasticsearch(),  # type: ignore[arg-type]
        no_embedding,
        [text_only(IndexSettings(name="docs"), "m")],
    )
    app[SEARCHER] = searcher
    app.router.add_post("/v1/search", post_search)
    async with TestClient(TestServer(app)) as c:
        yield c


async def post_raw(client: Client, path: str, text: str) -> Any:
    # BytesIO: aiohttp warns (an error here) about large bodies given as bytes.
    data = io.BytesIO(text.encode())
    return await client.post(path, data=data, headers={"content-type": "application/json"})


# ---- the parser alone ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "param", "words"),
    [
        ('{"dimensions": ' + HUGE + "}", "dimensions", "5,000 digits"),
        ('{"a": {"b": [1, -' + "1" * 21 + "]}}", "a.b[1]", "21 digits"),
        ('{"w": 1e999}', "w", "out of range"),
        ('{"w": [NaN]}', "w[0]", "NaN"),
        ('{"w": -Infinity}', "w", "-Infinity"),
        ('{"instruction": "a\\ud800b"}', "instruction", "lone surrogate"),
        ('{"input": ["ok", "\\udfff"]}', "input[1]", "lone surrogate"),
        ('{"\\ud800": 1}', "\\ud800", "field name"),
        ('{"input": ' + "[" * DEEP + "]" * DEEP + "}", "input", "nested more than"),
        ('{"a": 1, "x": "y", "f": ' + "{}" + ', "g": ' + '{"k":' * DEEP + "1" + "}" * DEEP + "}",
         "g", "nested more than"),
        ("[" * DEEP + "]" * DEEP, None, "nested more than"),
        ('{"input": ' + "[" * 200 + "]" * 200 + "}", "input", "nested more than"),
        ("{nope", None, "not valid JSON"),
    ],
)  # fmt: skip
def test_refusals_name_the_field(text: str, param: str | None, words: str) -> None:
    with pytest.raises(EmbedError) as info:
        strict_json.parse(text)
    assert info.value.kind is ErrorKind.INVALID_REQUEST
    assert info.value.param == param
    assert words in info.value.message


def test_what_it_accepts_is_what_json_reads() -> None:
    text = json.dumps(
        {
            "n": [0, -1, 10**19, 1.5e308, -2.5e-300],
            "s": "\u00e9\u4e2d\U0001f600 \x00",
            "d": [[[[{"a": [[["deep but fine"]]]}]]]],
        }
    )
    assert strict_json.parse(text) == json.loads(text)
    limit = "[" * strict_json.MAX_DEPTH + "]" * strict_json.MAX_DEPTH
    assert strict_json.parse(limit) == json.loads(limit)


def test_root_names_a_cli_value() -> None:
    with pytest.raises(EmbedError) as info:
        strict_json.parse('{"range": {"n": {"gte": 1e400}}}', "--filter")
    assert info.value.param == "--filter.range.n.gte"


# ---- through the API ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"input": "x", "dimensions": ' + HUGE + "}", "dimensions"),
        ('{"input": "x", "input_type": "query", "instruction": "lone \\ud800 surrogate"}',
         "instruction"),
        ('{"input": ' + "[" * DEEP + "]" * DEEP + "}", "input"),
        ('{"input": "x", "dimensions": NaN}', "dimensions"),
        ('{"input": "x", "dimensions": 12345678901234567890}', "dimensions"),
    ],
)  # fmt: skip
async def test_embeddings_answers_400_not_500(embeddings: Client, body: str, param: str) -> None:
    error = await error_of(await post_raw(embeddings, "/v1/embeddings", body), 400)
    assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"index": "docs", "query": "q", "rank_constant": ' + HUGE + "}", "rank_constant"),
        ('{"index": "docs", "query": "q", "rank_constant": 99999999999}', "rank_constant"),
        # 20,000 levels: past the parser's recursion limit, within this bare app's 1 MiB.
        ('{"index": "docs", "query": "q", "filter": ' + '{"bool":{"filter":' * 20_000 + "{}"
         + "}}" * 20_000 + "}", "filter"),
        ('{"index": "docs", "query": "q", "fusion": "linear", "weights": {"bm25": 1.7e308, '
         '"knn": 1.7e308}}', "weights.bm25"),
        ('{"index": "docs", "query": "q", "weights": {"knn": 1e999}}', "weights.knn"),
        ('{"index": "docs", "query": "q", "source": ["title", "\\ud800"]}', "source[1]"),
        ('{"index": "docs", "query": "q", "filter": {"term": {"t": "\\udc00"}}}',
         "filter.term.t"),
    ],
)  # fmt: skip
async def test_search_answers_400_not_500(search: Client, body: str, param: str) -> None:
    error = await error_of(await post_raw(search, "/v1/search", body), 400)
    assert error["param"] == param
