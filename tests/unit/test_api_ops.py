"""/v1/models, /health and /metrics through the real app."""

from __future__ import annotations

import re

from tests.api_support import api_client, make_settings
from tests.fakes import FakeEncoder


async def test_models_lists_the_served_model_with_aliases() -> None:
    settings = make_settings(model={"aliases": ["small"]})
    async with api_client(settings, FakeEncoder(hidden_size=96)) as c:
        body = await (await c.get("/v1/models")).json()
    assert body["object"] == "list"
    [model] = body["data"]
    assert model["id"] == "fake-encoder" and model["object"] == "model"
    assert model["aliases"] == ["small"] and model["dimensions"] == 96
    assert isinstance(model["created"], int)


async def test_health_reports_model_and_device() -> None:
    async with api_client(encoder=FakeEncoder(hidden_size=48)) as c:
        resp = await c.get("/health")
        body = await resp.json()
    assert resp.status == 200
    assert body == {
        "status": "healthy",
        "model": "fake-encoder",
        "dims": 48,
        "device": "cpu",
        "dtype": "float32",
    }


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample; labels must match exactly (in sorted order, as rendered)."""
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(name + ("{" + body + "}" if body else "")) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{pattern} not in metrics"
    return float(match.group(1))


async def test_metrics_count_requests_and_service_work() -> None:
    async with api_client() as c:
        for _ in range(3):
            assert (
                await c.post("/v1/embeddings", json={"input": ["one two", "three"]})
            ).status == 200
        assert (await c.post("/v1/embeddings", json={"input": []})).status == 400
        assert (await c.get("/nowhere/1")).status == 404
        resp = await c.get("/metrics")
        text = await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    route = {"route": "/v1/embeddings", "method": "POST"}
    assert metric(text, "es_embed_http_requests_total", status="200", **route) == 3
    assert metric(text, "es_embed_http_requests_total", status="400", **route) == 1
    # Unknown paths share one label value, whatever the path.
    assert (
        metric(text, "es_embed_http_requests_total", route="unmatched", method="GET", status="404")
        == 1
    )
    assert "/nowhere/1" not in text
    assert metric(text, "es_embed_http_request_seconds_count", **route) == 4
    # Recorded by the service: 3 requests x (3 + 2) tokens on the bulk lane.
    assert metric(text, "es_embed_tokens_total", lane="bulk") == 15
    assert metric(text, "es_embed_queue_depth", lane="query") == 0
    assert metric(text, "es_embed_batch_size_count") >= 1
    assert "es_embed_batch_tokens_bucket" in text


async def test_search_route_is_mounted_when_indices_are_configured() -> None:
    from es_embed.api.keys import ES_CLIENT

    settings = make_settings(
        elasticsearch={"url": "http://127.0.0.1:9"}, indices=[{"name": "docs"}]
    )
    async with api_client(settings) as c:
        assert ES_CLIENT in c.app
        # Validation happens before Elasticsearch is asked, so no node is needed for a 404.
        resp = await c.post("/v1/search", json={"index": "nope", "query": "x"})
        body = await resp.json()
        assert resp.status == 404 and body["error"]["param"] == "index", body
    async with api_client() as c:  # no indices: no client, no route
        assert (await c.post("/v1/search", json={"index": "docs", "query": "x"})).status == 404
