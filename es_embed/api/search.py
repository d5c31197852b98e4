"""``POST /v1/search``: validate the body, run the search, answer hits or a precise error.

The app builds one ``Searcher`` at start-up (``make_searcher``, from the app's
Elasticsearch client and embedding service) and stores it under ``SEARCHER``.

Request: ``{index, query, mode, fusion, k, from, filter, weights, source, window,
rank_constant, num_candidates}`` (only index and query are required).
Answer: ``{hits: [{_index, _id, _score, _source, legs: {bm25: {rank, score}, knn: {rank,
score}}}], took_ms, embed_ms}``. Unknown index: 404 naming it; a bad field: 400 naming it.
"""

from __future__ import annotations

from aiohttp import web
from elasticsearch import AsyncElasticsearch

from es_embed.api.embeddings import read_json
from es_embed.config import Settings
from es_embed.embed.service import EmbeddingService
from es_embed.indices.resolve import resolve_all
from es_embed.search.execute import Searcher
from es_embed.search.spec import spec_from_json

SEARCHER = web.AppKey("searcher", Searcher)


def make_searcher(
    es: AsyncElasticsearch, service: EmbeddingService, settings: Settings
) -> Searcher:
    return Searcher(es, service.embed_query, resolve_all(settings.indices, service.info.shape))


async def post_search(request: web.Request) -> web.Response:
    """EmbedErrors go to the app's error middleware, like every other route's."""
    # The same reader as /v1/embeddings: one wording for bad bytes and bad JSON.
    spec = spec_from_json(await read_json(request))
    result = await request.app[SEARCHER].search(spec)
    return web.json_response(result.to_json())
