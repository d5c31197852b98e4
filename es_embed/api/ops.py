"""Operational endpoints (``/v1/models``, ``/health``, ``/metrics``) and the middleware that
counts, times and logs every request."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import generate_latest

from es_embed.api.keys import REGISTRY, SERVICE, SETTINGS, STARTED_AT
from es_embed.metrics import CONTENT_TYPE, Registry

log = logging.getLogger("es_embed.api")


async def get_models(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    info = service.info
    model = {
        "id": info.model_id,
        "object": "model",
        "created": request.app[STARTED_AT],
        "owned_by": "es-embed",
        # Extensions (OpenAI clients ignore unknown keys): what a caller needs to size indices.
        "aliases": list(request.app[SETTINGS].model.aliases),
        "dimensions": info.hidden_size,
        "matryoshka": info.matryoshka,
        "matryoshka_dims": list(info.matryoshka_dims) if info.matryoshka_dims else None,
        "max_length": info.max_length,
    }
    models = [model]
    reranker = service.reranker_info
    if reranker is not None:
        # After the embedding model: clients that read data[0] keep finding the embedder.
        models.append(
            {
                "id": reranker.model_id,
                "object": "model",
                "created": request.app[STARTED_AT],
                "owned_by": "es-embed",
                "task": "rerank",  # served by POST /v1/rerank
                "family": reranker.family,
                "max_length": reranker.max_length,
            }
        )
    return web.json_response({"object": "list", "data": models})


async def get_health(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    healthy, reason = service.health()
    if not healthy:
        return web.json_response({"status": "unhealthy", "reason": reason}, status=503)
    info = service.info
    body = {
        "status": "healthy",
        "model": info.model_id,
        "dims": info.hidden_size,
        "device": info.device,
        "dtype": info.dtype,
    }
    if service.reranker_info is not None:
        body["reranker"] = service.reranker_info.model_id
    return web.json_response(body)


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    # Passed as a header: aiohttp's content_type= refuses a value carrying parameters.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def observe_middleware(registry: Registry) -> Middleware:
    """Count requests by route, method and status; time them; one debug log line each."""
    requests = registry.counter(
        "es_embed_http_requests_total",
        "HTTP requests, by route, method and status.",
        ("route", "method", "status"),
    )
    latency = registry.histogram(
        "es_embed_http_request_seconds",
        "HTTP request latency, by route and method.",
        ("route", "method"),
    )

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 499  # nginx's "client closed request": the handler was cancelled
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            seconds = time.perf_counter() - started
            # The route's template, never the raw path: unknown paths must not mint labels.
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            requests.labels(route, request.method, str(status)).inc()
            latency.labels(route, request.method).observe(seconds)
            log.debug(
                "%s %s -> %d in %.1f ms", request.method, request.path, status, seconds * 1000
            )

    return observe
