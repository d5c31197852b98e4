"""Typed application state (aiohttp's "no singletons"): every shared object lives under one of
these keys, is created in the app factory or a ``cleanup_ctx`` and closed there.

Handlers read ``request.app[KEY]``; nothing is a module-level global, so two apps (two tests,
two ports) never share a model, a registry or a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from es_embed.config import Settings
from es_embed.embed.service import EmbeddingService
from es_embed.metrics import Registry

if TYPE_CHECKING:  # the Elasticsearch parts are imported only when indices are configured
    from elasticsearch import AsyncElasticsearch

    from es_embed.follow.follower import Follower

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
# Set by the service cleanup_ctx once the model is loaded and its thread started.
SERVICE = web.AppKey("service", EmbeddingService)
STARTED_AT = web.AppKey("started_at", int)
# Set by the Elasticsearch cleanup_ctx, only when settings.indices is non-empty.
ES_CLIENT: web.AppKey[AsyncElasticsearch] = web.AppKey("es_client")
# Set by the follow cleanup_ctx (``es-embed serve`` with follow.enabled).
FOLLOWERS: web.AppKey[list[Follower]] = web.AppKey("followers")
