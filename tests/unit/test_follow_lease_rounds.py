"""Lease rounds of several replicas (``ShardLeases.round``) against an in-memory state index
and one fake clock: who owns what as replicas join, die and pause, and when.

The state index here keeps only what leases use: documents with ``_seq_no`` /
``_primary_term``, conditional updates (409 on a stale fence), create, index, delete, mget,
and a search filtered by terms. Each replica runs a round every ``lease_seconds / 3`` of fake
time, at its own phase, as ``Follower._lease_round`` does.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Iterable
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders
from elasticsearch import BadRequestError, ConflictError, NotFoundError

from es_embed.config import FollowSettings
from es_embed.follow.leases import LeaseLost, ShardKey, ShardLeases
from es_embed.follow.positions import ShardPosition

LEASE = 30.0
ROUND = LEASE / 3
INDEX = "docs"
EIGHT = [ShardPosition("docs-1", "u", n, 100) for n in range(8)]


def _error(cls: type[Exception], status: int) -> Exception:
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.0, None)  # type: ignore[arg-type]
    return cls(str(status), meta, {})


class StateIndex:
    """The state index, in memory: every write bumps the one ``_seq_no`` counter."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[dict[str, Any], int]] = {}
        self.seq_no = 0
        self.writes = 0

    def _put(self, id: str, source: dict[str, Any]) -> dict[str, Any]:
        self.seq_no += 1
        self.writes += 1
        self.docs[id] = (source, self.seq_no)
        return {"_seq_no": self.seq_no, "_primary_term": 1}

    async def update(
        self, index: str, id: str, doc: dict[str, Any], if_seq_no: int, if_primary_term: int
    ) -> dict[str, Any]:
        if id not in self.docs:
            raise _error(NotFoundError, 404)
        source, seq_no = self.docs[id]
        if seq_no != if_seq_no or if_primary_term != 1:
            raise _error(ConflictError, 409)
        return self._put(id, {**source, **copy.deepcopy(doc)})

    async def create(self, index: str, id: str, document: dict[str, Any]) -> dict[str, Any]:
        if id in self.docs:
            raise _error(ConflictError, 409)
        return self._put(id, copy.deepcopy(document))

    async def index(self, index: str, id: str, document: dict[str, Any]) -> dict[str, Any]:
        return self._put(id, copy.deepcopy(document))

    def options(self, **_: Any) -> StateIndex:
        return self

    async def delete(self, index: str, id: str) -> None:
        self.docs.pop(id, None)

    async def mget(self, index: str, ids: list[str]) -> dict[str, Any]:
        if not ids:  # as Elasticsearch: "no documents to get"
            raise _error(BadRequestError, 400)
        docs = []
        for id in ids:
            if id in self.docs:
                source, n = self.docs[id]
                docs.append({"_id": id, "found": True, "_source": copy.deepcopy(source),
                             "_seq_no": n, "_primary_term": 1})  # fmt: skip
            else:
                docs.append({"_id": id, "found": False})
        return {"docs": docs}

    async def search(self, index: str, query: dict[str, Any], **_: Any) -> dict[str, Any]:
        terms = [f["term"] for f in query["bool"]["filter"]]
        hits = [
            {"_id": id, "_source": copy.deepcopy(s)}
            for id, (s, _) in self.docs.items()
            if all(s.get(k) == v for term in terms for k, v in term.items())
        ]
        return {"hits": {"hits": hits}}

    def owners(self, now: float) -> dict[int, str | None]:
        """shard -> the owner of its live lease (None: lapsed, handed back)."""
        out = {}
        for source, _ in self.docs.values():
            if source.get("kind") == "checkpoint":
                live = float(source.get("expires_at") or 0) / 1000 > now
                out[int(source["shard"])] = source.get("owner") if live else None
        return out


class Cluster:
    """Replicas taking their lease rounds on one fake clock."""

    def __init__(self, positions: list[ShardPosition] = EIGHT) -> None:
        self.es = StateIndex()
        self.now = 1_000_000.0
        self.positions = positions
        self.replicas: dict[str, ShardLeases] = {}
        self.stopped: dict[str, list[int]] = {}  # replica -> shards whose feed it stopped
        self._due: list[tuple[float, str]] = []
        self.dead: set[str] = set()

    def join(self, name: str, phase: float = 0.0) -> ShardLeases:
        follow = FollowSettings(replica_id=name, lease_seconds=LEASE)
        leases = ShardLeases(self.es, follow, INDEX, clock=lambda: self.now)  # type: ignore[arg-type]
        self.replicas[name] = leases
        self.stopped[name] = []
        heapq.heappush(self._due, (self.now + phase, name))
        return leases

    async def run_until(self, until: float) -> None:
        """Every replica's rounds up to ``until`` (fake seconds from now), in time order."""
        end = self.now + until
        while self._due and self._due[0][0] <= end:
            at, name = heapq.heappop(self._due)
            self.now = max(self.now, at)
            if name in self.dead:
                continue
            await self.replicas[name].round(self.positions, self._stopper(name))
            heapq.heappush(self._due, (at + ROUND, name))
        self.now = end

    def _stopper(self, name: str) -> Any:
        async def stop(key: ShardKey) -> None:
            self.stopped[name].append(key[1])

        return stop

    def counts(self, names: Iterable[str]) -> list[int]:
        return [len(self.replicas[n].held) for n in names]

    def owners(self) -> dict[int, str | None]:
        return self.es.owners(self.now)


async def test_replicas_joining_one_by_one_split_eight_shards_fairly() -> None:
    c = Cluster()
    c.join("a")
    await c.run_until(0)
    assert c.counts("a") == [8]
    c.join("b", phase=ROUND / 2)
    # b's first round writes its heartbeat; a hands back 4 on its next; b claims them on its
    # next: within two rounds of joining, far inside two lease periods.
    await c.run_until(2 * ROUND)
    assert c.counts("ab") == [4, 4]
    c.join("c", phase=ROUND / 3)
    await c.run_until(2 * ROUND)
    assert sorted(c.counts("abc")) == [2, 3, 3]
    assert set(c.owners().values()) == {"a", "b", "c"}
    # Each shard's lease names the replica that holds it.
    for name, leases in c.replicas.items():
        assert {c.owners()[key[1]] for key in leases.held} <= {name}


async def test_a_steady_split_never_moves_a_shard() -> None:
    c = Cluster()
    for name, phase in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        c.join(name, phase)
    await c.run_until(3 * ROUND)
    settled, stops = c.owners(), copy.deepcopy(c.stopped)
    await c.run_until(10 * LEASE)
    assert c.owners() == settled and c.stopped == stops
    assert sorted(c.counts("abc")) == [2, 3, 3]


async def test_a_dead_replicas_shards_are_taken_over_within_two_lease_periods() -> None:
    c = Cluster()
    for name, phase in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        c.join(name, phase)
    await c.run_until(3 * ROUND)
    before = c.owners()
    dead = sorted(s for s, o in before.items() if o == "c")
    c.dead.add("c")  # SIGKILL: no round, no hand-back, no heartbeat removal
    await c.run_until(LEASE - ROUND)  # its leases have not lapsed yet: nobody takes them
    assert c.owners() == before
    await c.run_until(2 * ROUND)  # the lapse, then each survivor's next round
    assert c.counts("ab") == [4, 4]
    after = c.owners()
    assert set(after.values()) == {"a", "b"}
    # Only the dead replica's shards moved; a's and b's stayed where they were.
    assert {s for s in after if after[s] != before[s]} == set(dead)


async def test_a_leaving_replica_hands_back_and_the_rest_take_over_at_once() -> None:
    c = Cluster()
    for name, phase in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        c.join(name, phase)
    await c.run_until(3 * ROUND)
    await c.replicas["c"].leave()  # SIGTERM
    c.dead.add("c")
    await c.run_until(ROUND)
    assert c.counts("ab") == [4, 4]


async def test_a_fourth_replica_gets_two_of_eight() -> None:
    c = Cluster()
    for name, phase in (("a", 0.0), ("b", 1.0), ("c", 2.0)):
        c.join(name, phase)
    await c.run_until(3 * ROUND)
    stops = {n: len(c.stopped[n]) for n in "abc"}
    c.join("d", phase=0.5)
    await c.run_until(2 * ROUND)
    assert c.counts("abcd") == [2, 2, 2, 2]
    # Whoever handed a shard back stopped its feed first (its checkpoint written while the
    # lease was still its own); the newcomer stopped nothing.
    assert c.stopped["d"] == []
    assert sum(len(c.stopped[n]) - stops[n] for n in "abc") == 2


async def test_a_paused_replica_cannot_move_a_checkpoint_once_its_lease_lapsed() -> None:
    c = Cluster([ShardPosition("docs-1", "u", n, 100) for n in range(4)])
    a, b = c.join("a"), c.join("b", phase=1.0)
    await c.run_until(3 * ROUND)
    assert c.counts("ab") == [2, 2]
    key = next(iter(b.held))
    await b.save_checkpoint(key, 40)
    c.dead.add("b")  # SIGSTOP: b takes no round...
    await c.run_until(LEASE + ROUND)
    assert c.counts("a") == [4] and c.owners()[key[1]] == "a"
    assert a.checkpoint(key) == 40  # a resumes from b's last stored checkpoint
    writes = c.es.writes
    with pytest.raises(LeaseLost):  # ...and on SIGCONT its page in flight ends: 409
        await b.save_checkpoint(key, 90)
    assert c.es.writes == writes and key not in b.held
    stored = c.es.docs[f"{key[0]}:{key[1]}"][0]
    assert stored["checkpoint"] == 40 and stored["owner"] == "a"


async def test_a_lapsed_lease_nobody_took_still_moves_its_checkpoint() -> None:
    # A late renewal is not a lost lease: while nobody else claimed the shard, the fence
    # still passes, and the next round renews it again.
    c = Cluster([ShardPosition("docs-1", "u", 0, 100)])
    a = c.join("a")
    await c.run_until(0)
    key = ("u", 0)
    c.now += LEASE + 1  # paused past its lease; nobody else around to take it
    await a.save_checkpoint(key, 5)
    await c.run_until(0)  # the lapse is noticed: the feed stops, the free shard is claimed
    assert c.stopped["a"] == [0]
    assert c.counts("a") == [1] and a.checkpoint(key) == 5 and c.owners() == {0: "a"}


async def test_renewals_keep_every_lease_at_least_two_thirds_of_a_period_ahead() -> None:
    c = Cluster()
    for name, phase in (("a", 0.0), ("b", 3.3), ("c", 6.6)):
        c.join(name, phase)
    lowest = LEASE
    for _ in range(30):
        await c.run_until(ROUND / 4)
        for leases in c.replicas.values():
            for held in leases.held.values():
                lowest = min(lowest, held.expires_at - c.now)
    assert lowest >= LEASE - ROUND - 1e-6


async def test_a_round_before_the_index_exists_only_writes_the_heartbeat() -> None:
    c = Cluster([])  # nothing by that name yet
    a = c.join("a")
    await c.run_until(0)
    assert a.held == {} and c.owners() == {}
    assert list(c.es.docs) == [f"replica:{INDEX}:a"]


async def test_a_heartbeat_lapses_a_round_before_the_leases_it_came_with() -> None:
    # So a dead replica is no longer counted when its shards come free: the others take all
    # of them in one round instead of their share of a split that still counts the dead one.
    c = Cluster([ShardPosition("docs-1", "u", n, 100) for n in range(4)])
    c.join("a")
    await c.run_until(0)
    beat = c.es.docs[f"replica:{INDEX}:a"][0]
    lease = c.es.docs["u:0"][0]
    assert lease["expires_at"] - beat["expires_at"] == ROUND * 1000
    assert beat["renewed_at"] == lease["renewed_at"]
