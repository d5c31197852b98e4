"""/metrics on prometheus-client: parseable, complete from zero, exact, and one registry per app."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from es_embed.api.app import create_app
from es_embed.api.keys import REGISTRY
from es_embed.metrics import Registry
from tests.api_support import Client, api_client, make_settings
from tests.fakes import FakeEncoder


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by name and labels; fails if the text does not parse."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    found = samples(text).get((name, frozenset(labels.items())))
    assert found is not None, f"{name}{labels} not in metrics"
    return found


async def scrape(client: Client) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return await resp.text()


async def test_every_counter_is_present_from_zero() -> None:
    async with api_client() as c:
        text = await scrape(c)
    assert "\nes_embed_model_failures_total 0.0\n" in text
    assert value(text, "es_embed_model_failures_total") == 0
    assert value(text, "es_embed_truncated_inputs_total") == 0
    for lane in ("query", "bulk"):
        assert value(text, "es_embed_tokens_total", lane=lane) == 0
        assert value(text, "es_embed_rejected_total", lane=lane, reason="queue_full") == 0
        assert value(text, "es_embed_queue_depth", lane=lane) == 0
    assert value(text, "es_embed_healthy") == 1
    assert value(text, "es_embed_batch_size_count") == 0


async def test_large_counts_keep_every_digit() -> None:
    registry = Registry()
    app = create_app(make_settings(), encoder=FakeEncoder(), registry=registry)
    tokens = registry.counter(
        "es_embed_tokens_total", "Tokens embedded (unpadded), by lane.", ("lane",)
    )
    # Past 1,234,568 a 6-significant-digit renderer (%g) rounds; "one" adds 2 tokens.
    tokens.labels(lane="bulk").inc(1_234_567)
    async with TestClient(TestServer(app)) as c:
        assert (await c.post("/v1/embeddings", json={"input": "one"})).status == 200
        text = await scrape(c)
    assert app[REGISTRY] is registry
    [line] = [ln for ln in text.splitlines() if ln.startswith('es_embed_tokens_total{lane="bulk"}')]
    assert float(line.split()[-1]) == 1_234_569
    assert value(text, "es_embed_tokens_total", lane="bulk") == 1_234_569


async def test_process_metrics_are_exported() -> None:
    async with api_client() as c:
        text = await scrape(c)
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "process_cpu_seconds_total") >= 0
    assert any(name == "python_info" for name, _ in samples(text))


async def test_two_apps_in_one_process_keep_their_own_values() -> None:
    async with api_client() as first, api_client() as second:
        assert first.app[REGISTRY] is not second.app[REGISTRY]
        for _ in range(2):
            resp = await first.post("/v1/embeddings", json={"input": ["one two", "three"]})
            assert resp.status == 200
        one, two = await scrape(first), await scrape(second)
    assert value(one, "es_embed_tokens_total", lane="bulk") == 2 * (3 + 2)  # tokens + EOS each
    assert value(two, "es_embed_tokens_total", lane="bulk") == 0
    route = {"route": "/v1/embeddings", "method": "POST", "status": "200"}
    assert value(one, "es_embed_http_requests_total", **route) == 2
    assert ("es_embed_http_requests_total", frozenset(route.items())) not in samples(two)


def test_a_metric_is_declared_once_per_registry() -> None:
    registry = Registry()
    first = registry.counter(
        "es_embed_x_total", "X.", ("index", "outcome"), known=[("a",), ("y", "n")]
    )
    again = registry.counter(
        "es_embed_x_total", "X.", ("index", "outcome"), known=[("b",), ("y", "n")]
    )
    assert again is first
    first.labels(index="a", outcome="y").inc()
    for index in ("a", "b"):
        for outcome in ("y", "n"):
            expected = 1.0 if (index, outcome) == ("a", "y") else 0.0
            labels = {"index": index, "outcome": outcome}
            assert registry.get_sample_value("es_embed_x_total", labels) == expected
    # Another registry is another app: nothing is shared.
    assert Registry().get_sample_value("es_embed_x_total", {"index": "a", "outcome": "y"}) is None


def test_a_metric_redeclared_differently_is_refused() -> None:
    registry = Registry()
    registry.counter("es_embed_x_total", "X.", ("lane",))
    with pytest.raises(ValueError, match=r"es_embed_x_total is already a Counter with labels"):
        registry.counter("es_embed_x_total", "X.", ("lane", "reason"))
    with pytest.raises(ValueError, match=r"not a Gauge"):
        registry.gauge("es_embed_x_total", "X.", ("lane",))
    with pytest.raises(ValueError, match=r"known values for 2 labels, not 1"):
        registry.counter("es_embed_y_total", "Y.", ("lane",), known=[("a",), ("b",)])
