"""Several sidecar processes (``es-embed serve``, tiny Qwen on CPU) share one index by shard
leases: a replica SIGKILLed mid-way, one killed on a 4-shard index, one paused past its lease.

Each replica has its own config (port, ``follow.replica_id``) and the same state index. Leases
are short (``lease_seconds: 5``, renewed every third of it) and pages small, so takeovers
take seconds and a page in flight is little work. The replicas' own ``/metrics`` say how
many shards each owns; the state index says who owns which and its fence (``_seq_no``).
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.config import settings_from_dict
from es_embed.follow.feed import PAGES_IN_FLIGHT
from es_embed.provision.setup import Setup
from tests.fakes import ANY_SHAPE
from tests.faults.support import (
    Expect,
    Sidecar,
    bulk_docs,
    checkpoint_violations,
    cleaned_up,
    count_embedded,
    hash_mismatches,
    sidecar_config,
    wait_for,
)

pytestmark = [pytest.mark.es, pytest.mark.slow]

LEASE = 5.0  # seconds: the acceptance value
PAGE = 16
EXPECT = Expect(model="tiny-qwen", dims=64)
DEBUG = ("--log-level", "debug")  # the feed's per-page lines: what a replica embedded, wrote


@asynccontextmanager
async def fleet(
    es: AsyncElasticsearch,
    es_url: str,
    tmp_path: Path,
    model_dir: Path,
    shards: int,
    names: list[str],
) -> AsyncIterator[tuple[str, str, dict[str, Sidecar]]]:
    """(index, state index, a sidecar per name, not started) on a fresh index of ``shards``."""
    index, state = f"replicas-{uuid.uuid4().hex[:8]}", f"replicas-state-{uuid.uuid4().hex[:8]}"
    sidecars: dict[str, Sidecar] = {}
    for name in names:
        config = tmp_path / f"{name}.yaml"
        raw = sidecar_config(
            config, model_dir=model_dir, es_url=es_url, index=index, state_index=state,
            follow={"page_size": PAGE, "replica_id": name, "lease_seconds": LEASE},
        )  # fmt: skip
        sidecars[name] = Sidecar(config, raw["server"]["port"], tmp_path / f"{name}.log")
    async with cleaned_up(es, index, state):
        await es.indices.create(index=index, settings={"number_of_shards": shards})
        await Setup(es, settings_from_dict(raw), ANY_SHAPE).run()
        try:
            yield index, state, sidecars
        finally:
            for sidecar in sidecars.values():
                if sidecar.proc is not None and sidecar.proc.poll() is None:
                    sidecar.signal(signal.SIGCONT)  # a paused one must be able to die
                sidecar.kill()


async def start(*sidecars: Sidecar) -> None:
    for sidecar in sidecars:
        sidecar.start()
    await asyncio.gather(*(s.wait_healthy(120) for s in sidecars))


def owned(sidecar: Sidecar, index: str) -> int:
    """Its ``es_embed_follow_shards_owned`` gauge."""
    pattern = rf'^es_embed_follow_shards_owned{{index="{re.escape(index)}"}} (\S+)$'
    found = re.search(pattern, sidecar.metrics(), re.MULTILINE)
    assert found is not None, "no shards-owned gauge in /metrics"
    return int(float(found.group(1)))


def written_count(sidecar: Sidecar) -> int:
    """Vectors it wrote, from its ``es_embed_follow_documents_total{outcome="embedded"}``."""
    found = re.search(
        r'^es_embed_follow_documents_total{[^}]*outcome="embedded"[^}]*} (\S+)$',
        sidecar.metrics(),
        re.MULTILINE,
    )
    return 0 if found is None else int(float(found.group(1)))


async def shares(sidecars: list[Sidecar], index: str) -> list[int]:
    return [await asyncio.to_thread(owned, s, index) for s in sidecars]


def lease_lines(*sidecars: Sidecar) -> str:
    """Every replica's lease log lines: who claimed, handed back and lost what, and when."""
    words = ("owns", "handed back", "lost", "lapsed", "leases of")
    return "\n".join(
        line
        for s in sidecars
        for line in s.log().splitlines()
        if "es_embed.follow" in line and any(w in line for w in words)
    )


def work_in_log(sidecar: Sidecar) -> tuple[int, int]:
    """(documents embedded, vectors written), summed over the feed's debug lines."""
    log = sidecar.log()
    embedded = sum(int(n) for n in re.findall(r": embedded (\d+) documents$", log, re.MULTILINE))
    written = sum(int(n) for n in re.findall(r": wrote (\d+) vectors$", log, re.MULTILINE))
    return embedded, written


async def leases(es: AsyncElasticsearch, state: str) -> dict[int, dict[str, Any]]:
    """shard -> its checkpoint document's owner, live flag, checkpoint and fence."""
    await es.indices.refresh(index=state)
    resp = await es.search(
        index=state, size=100, query={"term": {"kind": "checkpoint"}}, seq_no_primary_term=True
    )
    now_ms = time.time() * 1000
    return {
        int(h["_source"]["shard"]): {
            "owner": h["_source"].get("owner"),
            "live": float(h["_source"].get("expires_at") or 0) > now_ms,
            "expires_at": float(h["_source"].get("expires_at") or 0) / 1000,
            "checkpoint": h["_source"]["checkpoint"],
            "fence": (h["_seq_no"], h["_primary_term"]),
        }
        for h in resp["hits"]["hits"]
    }


def live_owners(state: dict[int, dict[str, Any]]) -> dict[int, str | None]:
    return {shard: d["owner"] if d["live"] else None for shard, d in state.items()}


async def write_slowly(
    es: AsyncElasticsearch, index: str, total: int, batch: int, halfway: asyncio.Event
) -> None:
    """Index ``total`` new documents in batches, a little apart, as a client would."""
    for start_at in range(0, total, batch):
        ids = range(start_at, min(total, start_at + batch))
        resp = await es.bulk(operations=bulk_docs(index, ids, words=40))
        assert not resp["errors"], resp
        if ids.stop >= total // 2:
            halfway.set()
        await asyncio.sleep(0.3)


@pytest.mark.timeout(420)
async def test_three_replicas_lose_one_mid_way_and_a_fourth_gets_its_share(
    aes: AsyncElasticsearch, es_url: str, tmp_path: Path, tiny_qwen_dir: Path
) -> None:
    docs, shards = 2000, 8
    names = ["victim", "r1", "r2", "late"]
    async with fleet(aes, es_url, tmp_path, tiny_qwen_dir, shards, names) as (index, state, sc):
        victim, r1, r2, late = (sc[n] for n in names)
        victim.args = DEBUG
        await start(victim, r1, r2)

        async def split_in_three() -> bool:
            return sorted(await shares([victim, r1, r2], index)) == [2, 3, 3]

        await wait_for(split_in_three, 6 * LEASE, "8 shards split 3/3/2", step=0.5)
        halfway = asyncio.Event()
        writer = asyncio.create_task(write_slowly(aes, index, docs, 50, halfway))
        await halfway.wait()
        await wait_for(lambda: _vectors(aes, index, 3 * PAGE), 60, "some vectors written")
        # By owner, live or not: a lease that lapsed a moment ago is still nobody else's.
        theirs = [s for s, d in (await leases(aes, state)).items() if d["owner"] == "victim"]
        victim.signal(signal.SIGKILL)
        killed = time.monotonic()
        assert await victim.wait_exit(10) == -signal.SIGKILL

        async def taken_over() -> bool:
            owners = live_owners(await leases(aes, state))
            return len(owners) == shards and set(owners.values()) == {"r1", "r2"}

        await wait_for(taken_over, 4 * LEASE, "the victim's shards taken over", step=0.2)
        takeover = time.monotonic() - killed
        await writer

        async def all_current() -> bool:
            return await hash_mismatches(aes, index, EXPECT) == []

        await wait_for(all_current, 180, "every document current", step=1.0)
        assert await checkpoint_violations(aes, index, state, EXPECT) == []
        embedded, wrote = work_in_log(victim)
        # Embedded by the victim, not seen written: at most this many were embedded again (a
        # bulk that landed just before the kill but was never answered counts here too).
        twice = embedded - wrote

        async def survivors_counted() -> int:  # their counters follow on their next poll
            return sum([await asyncio.to_thread(written_count, s) for s in (r1, r2)])

        for _ in range(20):
            survivors = await survivors_counted()
            if survivors + wrote >= docs:
                break
            await asyncio.sleep(0.25)

        late.start()
        await late.wait_healthy(120)
        joined = time.monotonic()

        async def split_again() -> bool:
            return sorted(await shares([r1, r2, late], index)) == [2, 3, 3]

        await wait_for(split_again, 4 * LEASE, "the late replica gets its share", step=0.5)
        rebalanced = time.monotonic() - joined
        late_owns = await asyncio.to_thread(owned, late, index)
    report = (
        f"victim owned shards {sorted(theirs)}; taken over {takeover:.1f} s after SIGKILL; "
        f"victim embedded {embedded}, wrote {wrote}: embedded twice at most {twice}; survivors "
        f"wrote {survivors}, so exactly {max(0, embedded + survivors - docs)} (each document is "
        f"written once: {docs} = survivors' + victim's); late replica owns {late_owns} "
        f"{rebalanced:.1f} s after it was healthy"
    )
    print(report)
    report += "\n" + lease_lines(victim, r1, r2, late)
    assert len(theirs) >= 2, report  # its share of 8 among 3, at the kill
    assert takeover <= 2 * LEASE, report
    assert 0 <= twice <= PAGES_IN_FLIGHT * PAGE * len(theirs), report
    assert rebalanced <= 2 * LEASE, report


async def _vectors(es: AsyncElasticsearch, index: str, n: int) -> bool:
    return await count_embedded(es, index) >= n


Pair = tuple[str, str, Sidecar, Sidecar]  # index, state index, replicas a and b


@pytest.fixture
async def pair(
    aes: AsyncElasticsearch, es_url: str, tmp_path: Path, tiny_qwen_dir: Path
) -> AsyncIterator[Pair]:
    """Replicas a and b (b logging its pages) started on a fresh 4-shard index."""
    async with fleet(aes, es_url, tmp_path, tiny_qwen_dir, 4, ["a", "b"]) as (index, state, sc):
        sc["b"].args = DEBUG
        await start(sc["a"], sc["b"])
        yield index, state, sc["a"], sc["b"]


@pytest.mark.timeout(300)
async def test_two_replicas_split_four_shards_and_one_takes_all_after_a_kill(
    aes: AsyncElasticsearch, pair: Pair
) -> None:
    index, state, a, b = pair

    async def split() -> bool:
        counts = await shares([a, b], index)
        return sum(counts) == 4 and min(counts) >= 1

    await wait_for(split, 6 * LEASE, "4 shards owned together, at least one each", step=0.5)
    b.signal(signal.SIGKILL)
    killed = time.monotonic()
    assert await b.wait_exit(10) == -signal.SIGKILL
    resp = await aes.bulk(operations=bulk_docs(index, range(300), words=20))
    assert not resp["errors"], resp

    async def a_owns_all() -> bool:
        return await asyncio.to_thread(owned, a, index) == 4

    await wait_for(a_owns_all, 3 * LEASE, "a owns all 4 within three lease periods", 0.2)
    took = time.monotonic() - killed

    async def all_current() -> bool:
        return await hash_mismatches(aes, index, EXPECT) == []

    await wait_for(all_current, 120, "documents written after the kill embedded", 1.0)
    assert set(live_owners(await leases(aes, state)).values()) == {"a"}
    print(f"a owned all 4 shards {took:.1f} s after b was killed")


@pytest.mark.timeout(300)
async def test_a_paused_replica_writes_no_checkpoint_for_a_shard_another_now_owns(
    aes: AsyncElasticsearch, pair: Pair
) -> None:
    """b is paused past its lease while pages are in flight; a takes its shards over and is
    then paused too, so that any change to a checkpoint document while b runs is b's."""
    index, state, a, b = pair

    async def two_each() -> bool:
        return await shares([a, b], index) == [2, 2]

    await wait_for(two_each, 6 * LEASE, "two shards each", step=0.5)
    # Long texts, so b is mid-catch-up (pages in flight) when it is paused.
    for start_at in range(0, 1200, 400):
        resp = await aes.bulk(operations=bulk_docs(index, range(start_at, start_at + 400),
                                                   words=120))  # fmt: skip
        assert not resp["errors"], resp

    async def b_at_work() -> bool:
        return work_in_log(b)[1] > 0

    await wait_for(b_at_work, 60, "b writing vectors", step=0.2)
    b.signal(signal.SIGSTOP)
    before = await leases(aes, state)
    b_shards = sorted(s for s, d in before.items() if d["owner"] == "b")

    async def a_owns_all() -> bool:
        return set(live_owners(await leases(aes, state)).values()) == {"a"}

    await wait_for(a_owns_all, 3 * LEASE, "a takes b's shards over", step=0.2)
    # Freeze a too (within its lease, so b may not claim anything back).
    a.signal(signal.SIGSTOP)
    frozen = await leases(aes, state)
    window = min(d["expires_at"] for d in frozen.values()) - time.time() - 0.5
    assert window >= 1.0, f"a's leases too close to lapsing to observe b: {window:.1f} s"
    b.signal(signal.SIGCONT)
    await asyncio.sleep(window)
    after = await leases(aes, state)
    a.signal(signal.SIGCONT)
    log = b.log()

    async def all_current() -> bool:
        return await hash_mismatches(aes, index, EXPECT) == []

    await wait_for(all_current, 180, "every document current after both resumed", 1.0)
    for shard in b_shards:
        assert before[shard]["owner"] == "b" and frozen[shard]["owner"] == "a"
        assert frozen[shard]["fence"] != before[shard]["fence"]  # a's claim moved the fence
    # Nothing of b's landed while a owned every shard: same owner, checkpoint and fence.
    assert after == frozen, (frozen, after)
    lost = [s for s in b_shards if re.search(rf"(lost|lease of) {index} shard {s}\b", log)]
    assert lost == b_shards, f"b did not notice losing {b_shards}:\n{log[-3000:]}"
    print(f"b paused owning shards {b_shards}; a took them over; b resumed for {window:.1f} s "
          f"and wrote nothing to them")  # fmt: skip
