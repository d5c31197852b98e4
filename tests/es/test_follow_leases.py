"""Shard leases on the real node: two followers with their own replica ids stand in for two
sidecars sharing one 4-shard index (short leases, so a takeover takes seconds)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.cli.status import shard_rows
from es_embed.follow.follower import Follower, shard_positions
from es_embed.follow.leases import LeaseLost, ShardLeases
from es_embed.follow.state import state_id
from es_embed.metrics import Registry
from es_embed.provision.setup import Setup
from tests.es.follow_support import Env, TcpProxy, all_current, followed_index, running, wait_until
from tests.fakes import ANY_SHAPE

pytestmark = pytest.mark.es

LEASE = 5.0  # seconds, as in the acceptance; renewed every third of it
SHARDS = 4


def docs_ops(index: str, ids: range) -> list[dict]:
    return [
        op
        for i in ids
        for op in ({"index": {"_index": index, "_id": str(i)}}, {"text": f"words of doc {i}"})
    ]


@asynccontextmanager
async def four_shards(es_url: str) -> AsyncIterator[Env]:
    async with followed_index(es_url, setup=False, follow={"lease_seconds": LEASE}) as env:
        await env.es.indices.create(index=env.index, settings={"number_of_shards": SHARDS})
        await Setup(env.es, env.settings, ANY_SHAPE).run()
        yield env


@dataclasses.dataclass
class Replica:
    follower: Follower
    registry: Registry

    def owned(self) -> float | None:
        """Its /metrics gauge of shards owned."""
        name = self.follower.target.name
        return self.registry.get_sample_value("es_embed_follow_shards_owned", {"index": name})


def replica(env: Env, name: str, es: AsyncElasticsearch | None = None) -> Replica:
    follow = dataclasses.replace(env.settings.follow, replica_id=name)
    registry = Registry()
    return Replica(Follower(es or env.es, env.service, env.target, follow, registry), registry)


def split_between(*replicas: Replica, shares: tuple[float, ...]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return tuple(r.owned() for r in replicas) == shares

    return check


async def lease_owners(env: Env) -> dict[int, str | None]:
    state = env.settings.follow.state_index
    await env.es.indices.refresh(index=state)
    resp = await env.es.search(index=state, size=100, query={"term": {"kind": "checkpoint"}})
    return {h["_source"]["shard"]: h["_source"].get("owner") for h in resp["hits"]["hits"]}


async def test_two_replicas_split_four_shards_and_embed_each_document_once(es_url: str) -> None:
    async with four_shards(es_url) as env:
        a, b = replica(env, "replica-a"), replica(env, "replica-b")
        async with running(a.follower), running(b.follower):
            split = split_between(a, b, shares=(2, 2))
            await wait_until(split, timeout=4 * LEASE, what="two shards each")
            assert set((await lease_owners(env)).values()) == {"replica-a", "replica-b"}
            rows = await shard_rows(env.es, env.settings.follow.state_index, env.index)
            assert sorted(str(r.owner) for r in rows) == ["replica-a"] * 2 + ["replica-b"] * 2
            assert all(r.lease_age is not None and r.lease_age < LEASE for r in rows), rows
            await env.es.bulk(operations=docs_ops(env.index, range(200)))
            await wait_until(lambda: all_current(env), what="every document embedded")
        # Steady state: each document was embedded by exactly one of the two.
        assert env.encoder.encoded_inputs == 200
        done = a.follower.progress.embedded, b.follower.progress.embedded
        assert sum(done) == 200 and min(done) > 0, done


async def test_a_cut_off_replicas_shards_are_taken_over_within_two_lease_periods(
    es_url: str,
) -> None:
    url = urlsplit(es_url)
    proxy = TcpProxy(url.hostname or "127.0.0.1", url.port or 9200)
    await proxy.start()
    async with four_shards(es_url) as env:
        b_es = AsyncElasticsearch(proxy.url, request_timeout=1, max_retries=0)
        a, b = replica(env, "replica-a"), replica(env, "replica-b", b_es)
        try:
            async with running(a.follower), running(b.follower):
                await wait_until(split_between(a, b, shares=(2, 2)), timeout=4 * LEASE)
                await env.es.bulk(operations=docs_ops(env.index, range(100)))
                await proxy.cut()  # b can neither renew nor write: as good as dead
                cut = time.monotonic()
                await env.es.bulk(operations=docs_ops(env.index, range(100, 200)))
                all_of_them = split_between(a, shares=(SHARDS,))
                await wait_until(all_of_them, timeout=2 * LEASE + 1, what="a owns all")
                taken_over = time.monotonic() - cut
                await wait_until(lambda: all_current(env), what="writes during the cut")
                assert set((await lease_owners(env)).values()) == {"replica-a"}
        finally:
            await b_es.close()
    assert taken_over <= 2 * LEASE + 1, taken_over


async def test_a_stale_owner_cannot_move_the_checkpoint(es_url: str) -> None:
    async with four_shards(es_url) as env:
        await env.es.bulk(operations=docs_ops(env.index, range(40)), refresh=True)
        positions = await shard_positions(env.es, env.index)
        follow = env.settings.follow
        stale = ShardLeases(env.es, dataclasses.replace(follow, replica_id="old"), env.index)
        later = time.time() + 10 * LEASE  # the new owner's clock: "old"'s leases have lapsed
        fresh = ShardLeases(
            env.es, dataclasses.replace(follow, replica_id="new"), env.index, lambda: later
        )

        async def nothing(_: object) -> None:
            return None

        await stale.round(positions, nothing)
        key = (positions[0].uuid, positions[0].shard)
        assert set(stale.held) == {(p.uuid, p.shard) for p in positions}
        await stale.save_checkpoint(key, 5)
        await fresh.round(positions, nothing)  # "old" paused past its lease: taken over
        assert set(fresh.held) == set(stale.held)
        assert fresh.checkpoint(key) == 5  # the new owner resumes from the stored position
        with pytest.raises(LeaseLost):
            await stale.save_checkpoint(key, 30)  # the stale owner's write gets 409
        assert key not in stale.held
        await fresh.save_checkpoint(key, 7)
        doc = await env.es.get(index=follow.state_index, id=state_id(*key))
        assert doc["_source"]["checkpoint"] == 7 and doc["_source"]["owner"] == "new"
