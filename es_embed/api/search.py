"""``POST /v1/search``: validate the body, run the search, answer hits or a precise error.

The app builds one ``Searcher`` at start-up (``search_ctx``, from the app's Elasticsearch
client and embedding service) and stores it under ``SEARCHER``. With
``elasticsearch.search_api_key`` set, searches run on a client of their own with that key
(made by ``es-embed setup --search-key``: ``read`` on the configured indices only), so
Elasticsearch refuses any read outside them even if a filter got past the boundary check.

Request: ``{index, query, mode, fusion, k, from, filter, weights, source, window,
rank_constant, num_candidates, rerank: {window}}`` (only index and query are required).
Answer: ``{hits: [{_index, _id, _score, _source, legs: {bm25: {rank, score}, knn: {rank,
score}, rerank: {rank, score}}}], took_ms, embed_ms, rerank_ms?}``. Unknown index: 404
naming it; a bad field: 400 naming it; ``rerank`` with no reranker configured: 422.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import AsyncIterator, Sequence

import numpy as np
from aiohttp import web
from elasticsearch import AsyncElasticsearch

from es_embed.api.embeddings import read_json
from es_embed.api.keys import ES_CLIENT, SERVICE, SETTINGS
from es_embed.config import Settings
from es_embed.elastic.client import build_client
from es_embed.embed.service import EmbeddingService
from es_embed.indices.resolve import resolve_all
from es_embed.search.execute import Searcher
from es_embed.search.rerank import RerankStage
from es_embed.search.spec import spec_from_json

SEARCHER = web.AppKey("searcher", Searcher)
# Never NaN or Infinity in an answer: Python's default would write invalid JSON.
_dumps = functools.partial(json.dumps, allow_nan=False)


def make_searcher(
    es: AsyncElasticsearch,
    service: EmbeddingService,
    settings: Settings,
    meta_es: AsyncElasticsearch | None = None,
) -> Searcher:
    return Searcher(
        es,
        service.embed_query,
        resolve_all(settings.indices, service.info.shape),
        meta_es=meta_es,
        allow_scripts=settings.search.allow_scripts,
        rerank=rerank_stage(service),
    )


def rerank_stage(service: EmbeddingService) -> RerankStage | None:
    """The service's reranker as search's last stage, on the query lane (None: none here)."""
    info = service.reranker_info
    if info is None:
        return None

    async def score(query: str, documents: Sequence[str]) -> np.ndarray:
        return (await service.rerank(query, documents)).scores

    return RerankStage(info.model_id, score)


def search_client(settings: Settings) -> AsyncElasticsearch | None:
    """A client with ``search_api_key`` (and no other credentials), or None when unset."""
    es = settings.elasticsearch
    if not es.search_api_key:
        return None
    return build_client(
        dataclasses.replace(es, api_key=es.search_api_key, username=None, password=None)
    )


async def search_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx hook, after the Elasticsearch client's: the searcher (and its client)."""
    settings = app[SETTINGS]
    main = app[ES_CLIENT]
    own = search_client(settings)
    app[SEARCHER] = make_searcher(own or main, app[SERVICE], settings, meta_es=main)
    try:
        yield
    finally:
        if own is not None:
            await own.close()


async def post_search(request: web.Request) -> web.Response:
    """EmbedErrors go to the app's error middleware, like every other route's."""
    searcher = request.app[SEARCHER]
    # The same reader as /v1/embeddings: one wording for bad bytes and bad JSON.
    spec = spec_from_json(await read_json(request), allow_scripts=searcher.allow_scripts)
    result = await searcher.search(spec)
    return web.json_response(result.to_json(), dumps=_dumps)
