"""``es-embed search --server URL``: the query vector comes from the sidecar's /v1/embeddings
(query input type, the index's dims, the configured key), and its errors are clear."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from es_embed.cli.search import _server_embedder
from es_embed.config import ModelSettings, ServerSettings, Settings
from es_embed.embed.shape import ModelShape
from es_embed.errors import EmbedError, ErrorKind


def sidecar(embeddings: Any) -> web.Application:
    """A stand-in sidecar: the given /v1/embeddings, and /v1/models describing a model."""

    async def models(request: web.Request) -> web.Response:
        model = {"id": "served", "dimensions": 128, "matryoshka": True, "matryoshka_dims": None}
        return web.json_response({"object": "list", "data": [model]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    return app


async def test_query_vector_from_the_sidecar() -> None:
    seen: list[tuple[dict[str, Any], str | None]] = []

    async def embeddings(request: web.Request) -> web.Response:
        seen.append((await request.json(), request.headers.get("Authorization")))
        return web.json_response({"data": [{"index": 0, "embedding": [0.6, 0.8]}]})

    app = sidecar(embeddings)
    settings = Settings(
        model=ModelSettings(name="m", served_name="served"), server=ServerSettings(api_keys=("k1",))
    )
    async with TestServer(app) as server:
        async with _server_embedder(settings, str(server.make_url("/"))) as (embed, shape):
            vector = await embed("red fox", 64)
    # Index dims resolve against the sidecar's own account of its model.
    assert shape == ModelShape("served", 128, matryoshka=True)
    assert vector.dtype == np.float32 and vector.tolist() == pytest.approx([0.6, 0.8])
    assert seen == [
        (
            {"input": "red fox", "model": "served", "input_type": "query", "dimensions": 64},
            "Bearer k1",
        )
    ]


async def test_sidecar_errors_are_unavailable_with_its_message() -> None:
    async def embeddings(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "queue full"}}, status=429)

    async with TestServer(sidecar(embeddings)) as server:
        async with _server_embedder(Settings(), str(server.make_url("/"))) as (embed, _):
            with pytest.raises(EmbedError) as info:
                await embed("q", None)
    assert info.value.kind is ErrorKind.UNAVAILABLE and "429: queue full" in info.value.message
