"""Run the real app (FakeEncoder, and FakeReranker when given, behind the real
EmbeddingService) under aiohttp's test client."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.app import create_app
from es_embed.config import Settings, settings_from_dict
from tests.fakes import FakeEncoder, FakeReranker

Client = TestClient[Any, Any]


def make_settings(**sections: Mapping[str, Any] | list[Any]) -> Settings:
    raw: dict[str, Any] = {"model": {"name": "fake-encoder"}}
    for name, values in sections.items():
        raw[name] = values if isinstance(values, list) else {**raw.get(name, {}), **values}
    return settings_from_dict(raw)


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings | None = None,
    encoder: FakeEncoder | None = None,
    reranker: FakeReranker | None = None,
) -> AsyncIterator[Client]:
    app = create_app(
        settings or make_settings(), encoder=encoder or FakeEncoder(), reranker=reranker
    )
    async with TestClient(TestServer(app)) as client:
        yield client


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    """Assert the status and the OpenAI envelope; return its ``error`` object."""
    body = await resp.json()
    assert resp.status == status, body
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"], error
    return error


# The OpenAI error type each refusal status carries.
ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error"}


def assert_refusal(
    error: dict[str, Any], status: int, param: str | None, words: tuple[str, ...]
) -> None:
    """The error names ``param``, says each of ``words``, and has the status's type."""
    assert error["param"] == param, error
    for word in words:
        assert word in error["message"], (word, error["message"])
    assert error["type"] == ERROR_TYPES[status], error


async def until_queued(client: Client, lane: str) -> None:
    """Wait (a liveness bound, not a timing) until /metrics shows work queued on ``lane``."""
    pattern = re.compile(rf'es_embed_queue_depth\{{lane="{lane}"\}} (\d+)')
    for _ in range(500):
        depth = pattern.search(await (await client.get("/metrics")).text())
        if depth and int(float(depth.group(1))) > 0:
            return
        await asyncio.sleep(0.01)
