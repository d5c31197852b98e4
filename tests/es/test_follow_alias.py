"""A configured alias or data stream: every concrete index behind it is followed."""

from __future__ import annotations

import contextlib

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.embed.service import EmbeddingService
from es_embed.follow.follower import Follower
from es_embed.indices.resolve import resolve_index
from es_embed.provision.setup import Setup
from tests.es.follow_support import (
    DIMS,
    Env,
    make_settings,
    running,
    stale_documents,
    unique,
    wait_until,
)
from tests.fakes import ANY_SHAPE, FakeEncoder

pytestmark = pytest.mark.es


@contextlib.asynccontextmanager
async def service_and_client(es_url: str):  # type: ignore[no-untyped-def]
    from es_embed.config import BatchSettings, ModelSettings

    encoder = FakeEncoder()
    service = EmbeddingService(encoder, BatchSettings(), ModelSettings(name="fake"))
    await service.start()
    es = AsyncElasticsearch(es_url)
    try:
        yield es, service, encoder
    finally:
        await service.stop()
        await es.close()


async def search_all(es: AsyncElasticsearch, name: str) -> dict[str, dict]:
    await es.indices.refresh(index=name)
    resp = await es.search(index=name, size=1000, source={"exclude_vectors": False})
    return {f"{h['_index']}/{h['_id']}": h["_source"] for h in resp["hits"]["hits"]}


async def test_an_alias_over_two_indices_is_followed_into_each(es_url: str) -> None:
    alias, state = unique("alias"), unique("state")
    a, b = f"{alias}-a", f"{alias}-b"
    settings = make_settings(alias, state)
    async with service_and_client(es_url) as (es, service, encoder):
        try:
            for name in (a, b):
                await es.indices.create(index=name, settings={"number_of_shards": 2})
            await es.indices.update_aliases(
                actions=[
                    {"add": {"index": a, "alias": alias}},
                    {"add": {"index": b, "alias": alias}},
                ]
            )
            report = await Setup(es, settings, ANY_SHAPE).run()
            assert any(a in line for line in report.actions)
            assert any(b in line for line in report.actions)
            env = Env(es, service, encoder, settings, alias)
            follower = Follower(
                es, service, resolve_index(settings.indices[0], service.info.shape), settings.follow
            )
            async with running(follower):
                for i in range(10):
                    await es.index(index=a, id=f"x{i}", document={"text": f"in a {i}"})
                    await es.index(index=b, id=f"x{i}", document={"text": f"in b {i}"})

                async def done() -> bool:
                    docs = await search_all(es, alias)
                    return len(docs) == 20 and not stale_documents(env, docs)

                await wait_until(done, what="both indices filled")
                # Same ids in both indices: each got the vector of its own text.
                docs = await search_all(es, alias)
                assert docs[f"{a}/x1"]["_embed"]["hash"] != docs[f"{b}/x1"]["_embed"]["hash"]
                assert {k[0] for k in follower.checkpoints} == {a, b}
                assert len(follower.checkpoints) == 4  # two shards each
        finally:
            await es.options(ignore_status=404).indices.delete(index=f"{alias}-*,{state}")
            await es.options(ignore_status=404).indices.delete_index_template(
                name=f"es-embed-{alias}"
            )
            await es.options(ignore_status=404).cluster.delete_component_template(
                name=f"es-embed-{alias}"
            )


async def test_a_data_stream_is_followed_through_its_backing_indices(es_url: str) -> None:
    stream, state = unique("logs-esembed"), unique("state")
    settings = make_settings(stream, state)
    async with service_and_client(es_url) as (es, service, encoder):
        await es.indices.put_index_template(
            name=stream,
            index_patterns=[stream],
            data_stream={},
            priority=500,
            template={
                "mappings": {
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "embedding": {"type": "dense_vector", "dims": DIMS},
                    }
                }
            },
        )
        try:
            await es.index(
                index=stream, op_type="create",
                document={"@timestamp": "2025-01-01T00:00:00Z", "text": "first event"},
            )  # fmt: skip
            report = await Setup(es, settings, ANY_SHAPE).run()
            assert any("data stream" in note for note in report.notes)
            env = Env(es, service, encoder, settings, stream)
            follower = Follower(
                es, service, resolve_index(settings.indices[0], service.info.shape), settings.follow
            )
            async with running(follower):
                for i in range(5):
                    await es.index(
                        index=stream, op_type="create",
                        document={"@timestamp": f"2025-01-01T00:00:0{i}Z", "text": f"event {i}"},
                    )  # fmt: skip

                async def done() -> bool:
                    docs = await search_all(es, stream)
                    return len(docs) == 6 and not stale_documents(env, docs)

                await wait_until(done, what="data stream filled")
            backing = {k[0] for k in follower.checkpoints}
            assert backing and all(name.startswith(".ds-") for name in backing)
        finally:
            # The test node lacks the data-streams REST module: this may not clean up.
            with contextlib.suppress(Exception):
                await es.indices.delete_data_stream(name=stream)
            with contextlib.suppress(Exception):
                await es.indices.delete_index_template(name=stream)
            await es.options(ignore_status=404).indices.delete(index=state)
            await es.options(ignore_status=404).cluster.delete_component_template(
                name=f"es-embed-{stream}"
            )
