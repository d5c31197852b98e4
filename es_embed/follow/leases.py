"""Shard leases: several sidecars share the follow work of an index through es-embed-state.

The lease of a shard lives in its checkpoint document (id ``uuid:shard``): an owner and an
expiry next to the checkpoint. Every write to it carries ``if_seq_no``/``if_primary_term``,
so one conditional write both proves the lease is still ours and moves the checkpoint: a
replica that lost its lease (paused, cut off) has its next write refused with 409 and can
never move a checkpoint that another replica now owns. Each replica also keeps a heartbeat
document per followed index, so a replica that owns nothing yet still counts in the split.

Every round (a third of ``lease_seconds``) a replica renews its leases, reads everyone's,
and ``plan`` decides from that snapshot alone which shards to claim and which to hand back.
Expiry is wall-clock time compared across hosts (keep their clocks in step). The lease only
saves duplicate work, never correctness: the vector write-back keeps its own optimistic
concurrency.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from elasticsearch import AsyncElasticsearch, ConflictError, NotFoundError

from es_embed.config import FollowSettings
from es_embed.follow.positions import ShardPosition
from es_embed.follow.state import (
    CHECKPOINT,
    NO_CHECKPOINT,
    CheckpointStore,
    ensure_state_index,
    state_id,
)

log = logging.getLogger(__name__)

ShardKey = tuple[str, int]  # (index uuid, shard)
ROUNDS_PER_LEASE = 3  # renewed well inside the lease: two rounds may fail before it lapses
HEARTBEAT = "replica"  # the kind of a replica's heartbeat document


def replica_name(follow: FollowSettings) -> str:
    return follow.replica_id or f"{socket.gethostname()}:{os.getpid()}"


# ---- the decision: pure --------------------------------------------------------------


@dataclass(frozen=True)
class LeaseView:
    owner: str | None
    expires_at: float  # epoch seconds

    def live(self, now: float) -> bool:
        return bool(self.owner) and self.expires_at > now


@dataclass(frozen=True)
class Plan:
    claim: tuple[ShardKey, ...] = ()
    release: tuple[ShardKey, ...] = ()


def fair_share(shards: int, replicas: int) -> int:
    """What each replica aims for: ceil(shards / replicas)."""
    return -(-shards // max(1, replicas))


def _rank(me: str, key: ShardKey) -> bytes:
    # Rendezvous order: each replica prefers its own stable, spread-out shards, so replicas
    # claiming at the same moment mostly reach for different ones.
    return hashlib.sha256(f"{me}|{key[0]}|{key[1]}".encode()).digest()


def plan(
    me: str,
    shards: Sequence[ShardKey],
    leases: Mapping[ShardKey, LeaseView],
    alive: Iterable[str],
    held: Collection[ShardKey],
    now: float,
) -> Plan:
    """Which shards ``me`` claims and hands back, given one snapshot of the state index.

    ``shards``: every shard to follow; ``leases``: the stored lease of each; ``alive``:
    replicas with a live heartbeat; ``held``: the shards ``me`` holds. A lease that lapsed,
    was handed back or names ``me`` without being held (a restart under the same name) is
    free. Below its share a replica claims free shards; above it, it hands back its whole
    surplus at once (a replica below its share takes them on its next round); and the
    busiest replica gives one up while another is two or more below it. Claims only below
    the share and hand-backs only above it: with one view of who is alive no shard goes back
    and forth, nor between replicas already within one of each other.
    """
    counts: Counter[str] = Counter({name: 0 for name in alive})
    mine, free = [], []
    for key in shards:
        lease = leases.get(key)
        if key in held:
            mine.append(key)
        elif lease is not None and lease.live(now) and lease.owner != me:
            counts[str(lease.owner)] += 1
        else:
            free.append(key)
    counts[me] = len(mine)
    share = fair_share(len(shards), len(counts))
    if len(mine) < share:
        free.sort(key=lambda k: _rank(me, k))
        return Plan(claim=tuple(free[: share - len(mine)]))
    surplus = len(mine) - share
    busiest = min(counts, key=lambda name: (-counts[name], name))
    give = surplus if surplus > 0 else int(busiest == me and len(mine) - min(counts.values()) >= 2)
    if not give:
        return Plan()
    mine.sort(key=lambda k: _rank(me, k))
    return Plan(release=tuple(mine[-give:]))


# ---- the leases of one followed index: Elasticsearch calls ------------------------------


class LeaseLost(Exception):
    """Another replica took this shard's lease: stop its feed, write nothing for it."""


class LeasesUnreadable(Exception):
    """The state index could not answer for every lease (missing, a shard failed)."""


@dataclass
class Held:
    index: str  # the concrete index
    seq_no: int  # of our last write to the lease document: the fence
    primary_term: int
    expires_at: float
    checkpoint: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # renewal vs checkpoint write


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _view(source: Mapping[str, Any]) -> LeaseView:
    return LeaseView(source.get("owner"), float(source.get("expires_at") or 0) / 1000)


class ShardLeases:
    """This replica's leases on the shards of one configured index."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        follow: FollowSettings,
        name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._es = es
        self._state = follow.state_index
        self._lease = follow.lease_seconds
        self.name = name  # the configured index, alias or data stream
        self.replica = replica_name(follow)
        self._clock = clock
        self.held: dict[ShardKey, Held] = {}

    @property
    def round_seconds(self) -> float:
        return self._lease / ROUNDS_PER_LEASE

    def _stamp(self, shorter: float = 0.0) -> dict[str, Any]:
        now, until = self._clock(), self._lease - shorter
        return {"owner": self.replica, "expires_at": _ms(now + until), "renewed_at": _ms(now)}

    async def _write(self, key: ShardKey, held: Held, doc: dict[str, Any]) -> None:
        """One write fenced by the lease; LeaseLost (and the lease dropped) if it moved on."""
        try:
            resp = await self._es.update(
                index=self._state,
                id=state_id(*key),
                doc=doc,
                if_seq_no=held.seq_no,
                if_primary_term=held.primary_term,
            )
        except (ConflictError, NotFoundError) as exc:
            self.held.pop(key, None)
            raise LeaseLost(f"{held.index} shard {key[1]}") from exc
        held.seq_no, held.primary_term = int(resp["_seq_no"]), int(resp["_primary_term"])

    async def round(
        self, positions: Sequence[ShardPosition], stop: Callable[[ShardKey], Awaitable[None]]
    ) -> None:
        """Renew, read everyone's leases, then hand back and claim as ``plan`` says.

        ``stop`` ends a shard's feed; on hand-back it runs while the lease is still ours,
        so the feed's last checkpoint goes in first.
        """
        for key in [k for k, h in self.held.items() if h.expires_at <= self._clock()]:
            # Not renewed in time (paused, cut off): someone may own it now.
            self.held.pop(key)
            log.warning("replica %s: lease of %s shard %d lapsed", self.replica, self.name, key[1])
            await stop(key)
        # All at once: a round must stay short next to the lease it renews.
        keys = list(self.held)
        renewals = await asyncio.gather(*map(self._renew, keys), return_exceptions=True)
        for key, outcome in zip(keys, renewals, strict=True):
            if isinstance(outcome, LeaseLost):
                log.warning("replica %s lost %s shard %d", self.replica, self.name, key[1])
                await stop(key)
            elif isinstance(outcome, BaseException):
                raise outcome
        by_key = {(p.uuid, p.shard): p for p in positions}
        leases, docs, alive = await self._snapshot(list(by_key))  # (recreates a lost index)
        await self._heartbeat()
        now = self._clock()
        decision = plan(self.replica, list(by_key), leases, alive, set(self.held), now)
        for key in decision.release:
            await stop(key)
            await self._release(key)
        for key in decision.claim:
            await self._claim(by_key[key], docs.get(key))

    async def _renew(self, key: ShardKey) -> None:
        held = self.held[key]
        async with held.lock:
            stamp = self._stamp()
            await self._write(key, held, stamp)
            held.expires_at = stamp["expires_at"] / 1000

    async def _heartbeat(self) -> None:
        await self._es.index(
            index=self._state,
            id=f"{HEARTBEAT}:{self.name}:{self.replica}",
            # Lapses a round before the leases: a dead replica's shards all come free at once.
            document={"kind": HEARTBEAT, "name": self.name, **self._stamp(self.round_seconds)},
        )

    async def _snapshot(
        self, keys: Sequence[ShardKey]
    ) -> tuple[dict[ShardKey, LeaseView], dict[ShardKey, dict[str, Any]], set[str]]:
        """(lease by shard, its stored document, replicas with a live heartbeat). No refresh
        (on a busy cluster one takes seconds): leases by id are real-time; a heartbeat search
        may miss one written within the last second, which only delays the split a round."""
        try:
            ids = [state_id(*k) for k in keys]
            found: list[Any] = (
                (await self._es.mget(index=self._state, ids=ids))["docs"] if ids else []
            )
            failed = [doc["error"] for doc in found if "error" in doc]
            if failed:  # a missing index is reported per document, with a 200
                raise LeasesUnreadable(f"{self._state}: {failed[0]}")
        except (NotFoundError, LeasesUnreadable):
            # Lost (deleted, cluster replaced): recreate it strict before any write of ours
            # would create it with a dynamic mapping; the next round claims afresh.
            await ensure_state_index(self._es, self._state)
            raise
        leases, docs = {}, {}
        for key, doc in zip(keys, found, strict=True):
            if doc.get("found"):
                leases[key], docs[key] = _view(doc["_source"]), doc
        beats = await self._es.search(
            index=self._state,
            query={"bool": {"filter": [{"term": {"name": self.name}},
                                       {"term": {"kind": HEARTBEAT}}]}},
            size=10_000,
        )  # fmt: skip
        now = self._clock()
        alive = {
            str(hit["_source"]["owner"])
            for hit in beats["hits"]["hits"]
            if _view(hit["_source"]).live(now)
        }
        return leases, docs, alive

    async def _claim(self, pos: ShardPosition, hit: dict[str, Any] | None) -> None:
        key = (pos.uuid, pos.shard)
        stamp = self._stamp()
        try:
            if hit is None:
                resp = await self._es.create(
                    index=self._state,
                    id=state_id(*key),
                    document={
                        "kind": CHECKPOINT,
                        "name": self.name,
                        "index": pos.index,
                        "uuid": pos.uuid,
                        "shard": pos.shard,
                        "checkpoint": NO_CHECKPOINT,
                        "updated_at": datetime.now(UTC).isoformat(),
                        **stamp,
                    },
                )
                checkpoint = NO_CHECKPOINT
            else:
                resp = await self._es.update(
                    index=self._state,
                    id=state_id(*key),
                    doc=stamp,
                    if_seq_no=hit["_seq_no"],
                    if_primary_term=hit["_primary_term"],
                )
                checkpoint = int(hit["_source"].get("checkpoint", NO_CHECKPOINT))
        except (ConflictError, NotFoundError):
            return  # another replica was quicker; the next round sees it
        self.held[key] = Held(
            pos.index, int(resp["_seq_no"]), int(resp["_primary_term"]),
            stamp["expires_at"] / 1000, checkpoint,
        )  # fmt: skip
        log.info("replica %s owns %s shard %d", self.replica, pos.index, pos.shard)

    async def _release(self, key: ShardKey) -> None:
        held = self.held.get(key)
        if held is None:
            return
        async with held.lock:
            try:
                await self._write(key, held, {"owner": None, "expires_at": 0})
            except LeaseLost:
                return
        self.held.pop(key, None)
        log.info("replica %s handed back %s shard %d", self.replica, held.index, key[1])

    async def save_checkpoint(self, key: ShardKey, checkpoint: int) -> None:
        """Move the checkpoint, only while the lease is ours (``LeaseLost`` otherwise)."""
        held = self.held.get(key)  # not our clock: a lapsed lease nobody took is still ours
        if held is None:
            raise LeaseLost(f"{self.name} shard {key[1]}")
        async with held.lock:
            doc = {"checkpoint": checkpoint, "updated_at": datetime.now(UTC).isoformat()}
            await self._write(key, held, doc)
            held.checkpoint = checkpoint

    def checkpoint(self, key: ShardKey) -> int:
        held = self.held.get(key)
        if held is None:
            raise LeaseLost(f"{self.name} shard {key[1]}")
        return held.checkpoint

    def forget(self, key: ShardKey) -> None:
        self.held.pop(key, None)

    async def leave(self) -> None:
        """Hand every lease back and drop the heartbeat, so others take over at once."""
        for key in list(self.held):
            await self._release(key)
        await self._es.options(ignore_status=404).delete(
            index=self._state, id=f"{HEARTBEAT}:{self.name}:{self.replica}"
        )


class FencedCheckpoints(CheckpointStore):
    """The checkpoint store a leased feed writes through: every save is fenced by the lease."""

    def __init__(self, es: AsyncElasticsearch, leases: ShardLeases, state_index: str) -> None:
        super().__init__(es, state_index)
        self._leases = leases

    async def load(self, uuid: str, shard: int) -> int:
        return self._leases.checkpoint((uuid, shard))

    async def save(self, name: str, index: str, uuid: str, shard: int, checkpoint: int) -> None:
        await self._leases.save_checkpoint((uuid, shard), checkpoint)


@dataclass(frozen=True)
class LeaseStatus:
    owner: str | None  # the replica holding a live lease; None when lapsed or handed back
    age: float | None  # seconds since its last renewal; None where no lease was ever taken


async def read_leases(
    es: AsyncElasticsearch, state: str, shards: Iterable[ShardKey], now: float | None = None
) -> dict[ShardKey, LeaseStatus]:
    """The lease of each shard, for ``es-embed status`` (read-only)."""
    keys = list(shards)
    if not keys:
        return {}
    now = time.time() if now is None else now
    resp = await es.options(ignore_status=404).mget(
        index=state,
        ids=[state_id(*k) for k in keys],
        source_includes=["owner", "expires_at", "renewed_at"],
    )
    out = {}
    for key, doc in zip(keys, resp.get("docs") or [{} for _ in keys], strict=True):
        source = doc.get("_source") or {}
        renewed = source.get("renewed_at")
        view = _view(source)
        out[key] = LeaseStatus(
            view.owner if view.live(now) else None,
            None if renewed is None else max(0.0, now - float(renewed) / 1000),
        )
    return out
