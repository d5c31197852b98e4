"""The model thread raising, in the whole app (API + follower on the real node).

The failure is injected through the Encoder protocol: a FakeEncoder whose ``forward`` raises
while ``failure`` is set, served by ``create_app(..., encoder=..., follow=True)`` exactly as
``es-embed serve`` builds it (``serve`` itself always loads the configured model, so the
process-level tests use the tiny Qwen instead).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.app import create_app
from es_embed.api.keys import ES_CLIENT, FOLLOWERS
from es_embed.config import settings_from_dict
from es_embed.provision.setup import Setup
from tests.es.follow_support import unique
from tests.fakes import ANY_SHAPE, HeldEncoder
from tests.faults.support import (
    Expect,
    bulk_docs,
    checkpoint_violations,
    cleaned_up,
    hash_mismatches,
    stored_checkpoints,
    wait_for,
)

pytestmark = [pytest.mark.es]

FAILURE = "simulated CUDA error: an illegal memory access was encountered"


@pytest.mark.timeout(60)
async def test_model_failure_503s_pauses_the_follower_and_recovers(es_url: str) -> None:
    index, state = unique("fault-model"), unique("fault-model-state")
    settings = settings_from_dict(
        {
            "model": {"name": "fake-encoder"},
            "batching": {"probe_interval_seconds": 0.1},
            "elasticsearch": {"url": es_url},
            "follow": {"state_index": state, "poll_interval": 0.1, "max_backoff": 0.5},
            "indices": [{"name": index, "dims": 32}],
        }
    )
    expect = Expect(model="fake-encoder", dims=32)
    encoder = HeldEncoder()
    app = create_app(settings, encoder=encoder, follow=True)
    async with TestClient(TestServer(app)) as client:
        es = app[ES_CLIENT]
        async with cleaned_up(es, index, state):
            await Setup(es, settings, ANY_SHAPE).run()
            await es.bulk(operations=bulk_docs(index, range(20)), refresh=True)
            await wait_for(lambda: _no_mismatch(es, index, expect), 15, "first documents")

            # Requests waiting on the model when it fails: one in forward(), two queued.
            encoder.hold.set()
            first = asyncio.create_task(_embed(client, "in the model"))
            assert await asyncio.to_thread(encoder.entered.wait, 10)
            queued = [asyncio.create_task(_embed(client, f"queued {i}")) for i in range(2)]
            await asyncio.sleep(0.2)
            encoder.failure = RuntimeError(FAILURE)
            encoder.hold.clear()
            encoder.release.set()
            for status, body in await asyncio.gather(first, *queued):
                assert status == 503, body
                assert body["error"]["type"] == "service_unavailable"
                assert FAILURE in body["error"]["message"], body

            health = await client.get("/health")
            body = await health.json()
            assert health.status == 503 and body["status"] == "unhealthy", body
            assert FAILURE in body["reason"], body
            # New work while unhealthy: refused at once, not queued.
            status, body = await _embed(client, "while down")
            assert status == 503, body

            # The follower meets the failure and holds its checkpoint before the new writes.
            resp = await es.bulk(operations=bulk_docs(index, range(20, 40), tag="v2"))
            first_new = min(item["index"]["_seq_no"] for item in resp["items"])
            await asyncio.sleep(1.5)  # several attempts by the follower, all failing
            followers = app[FOLLOWERS]
            in_memory = [c for f in followers for c in f.checkpoints.values()]
            stored = await stored_checkpoints(es, state)
            assert in_memory and max(in_memory) < first_new, (in_memory, first_new)
            assert stored and max(stored.values()) < first_new, (stored, first_new)
            assert sorted(await hash_mismatches(es, index, expect)) == sorted(
                str(i) for i in range(20, 40)
            )
            assert await checkpoint_violations(es, index, state, expect) == []

            encoder.failure = None
            await wait_for(lambda: _healthy(client), 10, "healthy again after the probe")
            status, body = await _embed(client, "after recovery")
            assert status == 200 and len(body["data"][0]["embedding"]) == 64, body
            await wait_for(lambda: _no_mismatch(es, index, expect), 15, "the follower caught up")
            stored = await stored_checkpoints(es, state)
            assert max(stored.values()) >= first_new
            metrics = await (await client.get("/metrics")).text()
            # Present from zero, so the value (not the name) shows the failure was counted.
            name = "es_embed_model_failures_total "
            failures = [ln for ln in metrics.splitlines() if ln.startswith(name)]
            assert len(failures) == 1 and float(failures[0].split()[-1]) >= 1, failures
            assert "es_embed_healthy 1" in metrics


async def _embed(client: TestClient[Any, Any], text: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/embeddings", json={"input": text})
    return resp.status, await resp.json()


async def _healthy(client: TestClient[Any, Any]) -> bool:
    try:
        return (await client.get("/health")).status == 200
    except aiohttp.ClientError:
        return False


async def _no_mismatch(es: Any, index: str, expect: Expect) -> bool:
    return await hash_mismatches(es, index, expect) == []
