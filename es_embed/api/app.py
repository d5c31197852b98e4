"""The app factory: one ``web.Application`` per server, all state under typed keys.

Resources are opened and closed in ``cleanup_ctx`` hooks, in this order (closed in reverse):

1. the embedding service: the model is loaded off the event loop, its thread started;
2. when ``settings.indices`` is non-empty: the ``AsyncElasticsearch`` client (``ES_CLIENT``)
   and the searcher behind ``POST /v1/search``;
3. when ``follow=True`` (``es-embed serve``): the followers (``FOLLOWERS``).

Graceful shutdown (``on_shutdown``, which aiohttp runs after the listening sockets close and
before it waits for in-flight handlers): the service refuses new work with 503 and gets
``server.drain_seconds`` to finish what is queued; what is left gets 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from es_embed.api.auth import bearer_middleware
from es_embed.api.embeddings import post_embeddings
from es_embed.api.errors import error_middleware
from es_embed.api.keys import (
    ES_CLIENT,
    FOLLOWERS,
    REGISTRY,
    SERVICE,
    SETTINGS,
    STARTED_AT,
)
from es_embed.api.ops import get_health, get_metrics, get_models, observe_middleware
from es_embed.api.rerank import post_rerank
from es_embed.config import Settings, api_keys
from es_embed.embed.protocol import Encoder, Reranker
from es_embed.embed.startup import embedding_service
from es_embed.metrics import Registry

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    encoder: Encoder | None = None,
    registry: Registry | None = None,
    follow: bool = False,
    reranker: Reranker | None = None,
) -> web.Application:
    """Build the app; nothing is loaded until the app starts (its cleanup_ctx runs).

    ``encoder`` None loads the configured model; ``reranker`` None loads the configured
    reranker, if any (``POST /v1/rerank`` answers 404 without one). ``registry`` None builds
    this app its own (with process metrics), handed to the service and the followers; never
    the global one, so two apps in one process never mix their counts. Raises ConfigError
    when the API keys file cannot be read, so a bad setting fails before the model is loaded.
    """
    middlewares = [observe_middleware(registry := registry or Registry()), error_middleware]
    keys = api_keys(settings.server)
    if keys:
        middlewares.append(
            bearer_middleware(
                keys,
                protect_health=settings.server.protect_health,
                protect_metrics=settings.server.protect_metrics,
            )
        )
    app = web.Application(client_max_size=settings.server.max_body_bytes, middlewares=middlewares)
    app[SETTINGS] = settings
    app[REGISTRY] = registry
    app[STARTED_AT] = int(time.time())
    app.cleanup_ctx.append(_service_ctx(encoder, reranker))
    app.on_shutdown.append(_drain)
    app.router.add_post("/v1/embeddings", post_embeddings)
    app.router.add_post("/v1/rerank", post_rerank)
    app.router.add_get("/v1/models", get_models)
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    if settings.indices:
        _add_elasticsearch(app)
        if follow and settings.follow.enabled:
            app.cleanup_ctx.append(_follow_ctx)
    return app


def _service_ctx(
    encoder: Encoder | None, reranker: Reranker | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        # Warmed up before the app serves anything: the first request is not slow.
        async with embedding_service(
            app[SETTINGS],
            encoder,
            app[REGISTRY],
            reranker=reranker,
            with_reranker=True,
            warm_up=True,
        ) as service:
            app[SERVICE] = service
            yield

    return service_ctx


async def _drain(app: web.Application) -> None:
    if SERVICE in app:
        await app[SERVICE].stop(app[SETTINGS].server.drain_seconds)


def _add_elasticsearch(app: web.Application) -> None:
    # Imported here: an embeddings-only server never loads the Elasticsearch client.
    from es_embed.api.search import post_search, search_ctx
    from es_embed.elastic.client import build_client

    async def es_ctx(app: web.Application) -> AsyncIterator[None]:
        client = build_client(app[SETTINGS].elasticsearch)
        app[ES_CLIENT] = client
        try:
            yield
        finally:
            await client.close()

    app.cleanup_ctx.append(es_ctx)
    app.cleanup_ctx.append(search_ctx)
    app.router.add_post("/v1/search", post_search)


async def _follow_ctx(app: web.Application) -> AsyncIterator[None]:
    from es_embed.follow.follower import running_followers

    async with running_followers(
        app[SETTINGS], app[SERVICE], app[ES_CLIENT], app[REGISTRY]
    ) as followers:
        app[FOLLOWERS] = followers
        yield
