"""The state index (issue 14 item 7): lost while the follower runs, it comes back with its
strict mapping and with the checkpoints and failure records the follower wrote; an older
state index gains the new fields at start, and a loose (dynamic) one is rebuilt strict."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.follow.follower import Follower
from es_embed.follow.state import PROPERTIES, state_id
from tests.es import follow_support as fs
from tests.es.follow_support import Env

pytestmark = pytest.mark.es


def docs_ops(index: str, ids: range) -> list[dict[str, Any]]:
    return [
        op
        for i in ids
        for op in ({"index": {"_index": index, "_id": str(i)}}, {"text": f"text number {i}"})
    ]


async def state_mapping(env: Env) -> dict[str, Any]:
    got = await env.es.indices.get_mapping(index=env.state)
    mapping: dict[str, Any] = got[env.state]["mappings"]
    return mapping


async def index_uuid(env: Env) -> str:
    got = await env.es.indices.get(index=env.index)
    return str(got[env.index]["settings"]["index"]["uuid"])


async def stored_checkpoint(env: Env) -> int | None:
    doc = await env.es.options(ignore_status=404).get(
        index=env.state, id=state_id(await index_uuid(env), 0)
    )
    return doc["_source"]["checkpoint"] if doc.get("found") else None


@contextlib.asynccontextmanager
async def auto_create_refused(es: AsyncElasticsearch, name: str) -> AsyncIterator[None]:
    """Elasticsearch refuses to create ``name`` on a write (other indices as before)."""
    await es.cluster.put_settings(persistent={"action.auto_create_index": f"-{name},+*"})
    try:
        yield
    finally:
        await es.cluster.put_settings(persistent={"action.auto_create_index": None})


@pytest.mark.parametrize(
    ("auto_create", "restart"),
    [(True, False), (False, True)],
    ids=["auto-create, records written by this follower", "no auto-create, read at start"],
)
async def test_a_state_index_deleted_while_running_comes_back_strict(
    es_url: str, auto_create: bool, restart: bool
) -> None:
    # A short lease: the lease lives in the checkpoint document, so losing the state index
    # also loses the lease, and the follower claims its shard back on its next lease round.
    follow = {"page_size": 4, "lease_seconds": 3}
    async with fs.followed_index(es_url, follow=follow) as env:
        guard = contextlib.nullcontext() if auto_create else auto_create_refused(env.es, env.state)
        async with guard:
            first = env.follower()
            async with fs.running(first):
                await env.es.bulk(operations=docs_ops(env.index, range(10)))
                await fs.put_raw(env.es, env.index, "poison", fs.POISON)
                await fs.wait_until(
                    lambda: fs.only_failed_left(env, "poison"), what="before the loss"
                )
                if not restart:
                    await lose_the_state_index(env, first)
            if restart:  # the follower meeting the loss did not record the poison document
                second = env.follower()
                async with fs.running(second):
                    await lose_the_state_index(env, second)
        mapping = await state_mapping(env)
        assert mapping["dynamic"] == "strict"
        assert mapping["properties"] == await _strict_properties(env)
        assert (await fs.failures(env))["poison"].reason.startswith(
            "title contains a lone surrogate"
        )
        assert await fs.unaccounted(env) == []


async def lose_the_state_index(env: Env, follower: Follower) -> None:
    async def checkpoint_stored() -> bool:
        got = follower.checkpoints.get((env.index, 0))
        return got is not None and (await stored_checkpoint(env)) == got

    await fs.wait_until(checkpoint_stored, what="the follower running")
    await env.es.indices.delete(index=env.state)
    # The next checkpoint write finds it gone (or, by default, creates it loose).
    await env.es.bulk(operations=docs_ops(env.index, range(10, 20)))
    await fs.wait_until(
        lambda: fs.only_failed_left(env, "poison"), timeout=20, what="after the loss"
    )
    await fs.wait_until(checkpoint_stored, what="the checkpoint stored again")


async def _strict_properties(env: Env) -> dict[str, Any]:
    """PROPERTIES as Elasticsearch reports them back (it leaves out nothing we set)."""
    probe = f"{env.state}-probe"
    await env.es.indices.create(
        index=probe, mappings={"dynamic": "strict", "properties": PROPERTIES}
    )
    try:
        got = await env.es.indices.get_mapping(index=probe)
        props: dict[str, Any] = got[probe]["mappings"]["properties"]
        return props
    finally:
        await env.es.indices.delete(index=probe)


async def test_an_older_state_index_gains_the_failure_fields_at_start(es_url: str) -> None:
    async with fs.followed_index(es_url, follow={"page_size": 4}) as env:
        old_fields = ("name", "index", "uuid", "shard", "checkpoint", "updated_at")
        old = {k: v for k, v in PROPERTIES.items() if k in old_fields}
        await env.es.indices.delete(index=env.state)
        await env.es.indices.create(
            index=env.state, mappings={"dynamic": "strict", "properties": old}
        )
        await env.es.bulk(operations=docs_ops(env.index, range(5)), refresh=True)
        await fs.put_raw(env.es, env.index, "poison", fs.POISON)
        async with fs.running(env.follower()):
            await fs.wait_until(lambda: fs.only_failed_left(env, "poison"), what="poison recorded")
        mapping = await state_mapping(env)
        assert mapping["dynamic"] == "strict"
        assert set(mapping["properties"]) == set(PROPERTIES)
        assert await fs.unaccounted(env) == []


async def test_a_loose_state_index_is_rebuilt_strict_keeping_its_checkpoints(es_url: str) -> None:
    async with fs.followed_index(es_url) as env:
        await env.es.bulk(operations=docs_ops(env.index, range(5)), refresh=True)
        async with fs.running(env.follower()):
            await fs.wait_until(lambda: fs.all_current(env), what="first five")
        checkpoint = await stored_checkpoint(env)
        assert checkpoint is not None
        saved = (await env.es.get(index=env.state, id=state_id(await index_uuid(env), 0)))[
            "_source"
        ]
        # As a write after a lost cluster leaves it: same document, dynamic mapping.
        await env.es.indices.delete(index=env.state)
        await env.es.index(
            index=env.state, id=state_id(await index_uuid(env), 0), document=saved, refresh=True
        )
        assert "dynamic" not in await state_mapping(env)
        inputs = env.encoder.encoded_inputs

        second = env.follower()
        async with fs.running(second):
            await env.es.bulk(operations=docs_ops(env.index, range(5, 8)))
            await fs.wait_until(lambda: fs.all_current(env), what="three more")
        assert (await state_mapping(env))["dynamic"] == "strict"
        assert env.encoder.encoded_inputs == inputs + 3  # resumed from the kept checkpoint
        assert (await stored_checkpoint(env) or -1) > checkpoint
