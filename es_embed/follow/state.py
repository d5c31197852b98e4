"""The ``es-embed-state`` index: per-shard checkpoints and failed-document records.

- A checkpoint (``kind: checkpoint``, id ``<uuid>:<shard>``) is keyed by the index *uuid*,
  not its name, so a deleted and recreated index (same name, new uuid) starts over from -1
  without anyone having to clean up.
- A failed document (``kind: failed``) is one the feed could not take (text the hash or the
  model refuses, a vector Elasticsearch refuses for good): its index, id, ``_seq_no``,
  reason and time. The feed skips it so the shard moves on, and deletes the record once a
  later version of the document passes.

Elasticsearch creates a missing index on the first write to it, with a dynamic mapping, so
a state index lost while we run (deleted, or a cluster replaced) would come back loose.
Every write therefore checks for that: a write that finds the index missing (where
``action.auto_create_index`` is off) or that *creates* a record this store had written
before (the index under it is new) makes the index strict again and writes back every
record this store knows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError
from elasticsearch.helpers import async_scan

from es_embed.elastic.refusals import ALREADY_EXISTS, error_type

log = logging.getLogger(__name__)

NO_CHECKPOINT = -1
CHECKPOINT, FAILED = "checkpoint", "failed"  # the ``kind`` of a state document
REPAIR_ATTEMPTS = 5  # rounds of "create / rebuild" when several writers race on a lost index
COPY_LIMIT = 10_000  # state documents carried over when a loose state index is rebuilt

PROPERTIES: dict[str, Any] = {
    "kind": {"type": "keyword"},  # checkpoint | failed | replica (absent on old checkpoints)
    "name": {"type": "keyword"},  # the configured index, alias or data stream
    "index": {"type": "keyword"},  # the concrete index
    "uuid": {"type": "keyword"},
    "shard": {"type": "integer"},
    "checkpoint": {"type": "long"},
    "updated_at": {"type": "date"},
    "doc_id": {"type": "keyword"},  # failed: the document's _id, _routing and _seq_no
    "routing": {"type": "keyword"},
    "seq_no": {"type": "long"},
    "reason": {"type": "text", "index": False},
    "failed_at": {"type": "date"},
    # Shard leases (follow/leases.py): a checkpoint document is also its shard's lease, and
    # each replica keeps a heartbeat (kind "replica") per followed index.
    "owner": {"type": "keyword"},  # the replica holding the lease; null when handed back
    "expires_at": {"type": "date", "format": "epoch_millis"},
    "renewed_at": {"type": "date", "format": "epoch_millis"},
}
STATE_INDEX_BODY: dict[str, Any] = {
    "settings": {"number_of_shards": 1, "auto_expand_replicas": "0-1"},
    "mappings": {"dynamic": "strict", "properties": PROPERTIES},
}


def state_id(uuid: str, shard: int) -> str:
    return f"{uuid}:{shard}"


def failure_id(uuid: str, shard: int, doc_id: str) -> str:
    # A document _id may use all 512 bytes an _id allows, so ours carries a digest of it.
    digest = hashlib.sha256(doc_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"{FAILED}:{uuid}:{shard}:{digest}"


@dataclass(frozen=True)
class FailedDocument:
    name: str  # configured index
    index: str  # concrete index
    uuid: str
    shard: int
    doc_id: str
    routing: str | None
    seq_no: int
    reason: str
    failed_at: str

    @classmethod
    def from_source(cls, src: Mapping[str, Any]) -> FailedDocument:
        values: dict[str, Any] = {k: src.get(k) for k in cls.__dataclass_fields__}
        return cls(**values)


def failure_source(
    name: str, uuid: str, shard: int, hit: Mapping[str, Any], reason: str
) -> dict[str, Any]:
    return {
        "kind": FAILED,
        "name": name,
        "index": hit["_index"],
        "uuid": uuid,
        "shard": shard,
        "doc_id": hit["_id"],
        "routing": hit.get("_routing"),
        "seq_no": int(hit["_seq_no"]),
        "reason": reason,
        "failed_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


# ---- the index itself ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    uuid: str
    strict: bool
    fields: frozenset[str]


async def _describe(es: AsyncElasticsearch, name: str) -> _Seen | None:
    resp = await es.options(ignore_status=404).indices.get(
        index=name, filter_path=["*.settings.index.uuid", "*.mappings"]
    )
    info = resp.get(name)
    if not isinstance(info, dict):
        return None
    mappings = info.get("mappings") or {}
    fields = frozenset(mappings.get("properties") or {})
    return _Seen(info["settings"]["index"]["uuid"], mappings.get("dynamic") == "strict", fields)


async def _create(es: AsyncElasticsearch, name: str) -> bool:
    try:
        await es.indices.create(index=name, **STATE_INDEX_BODY)
    except ApiError as exc:
        if error_type(exc) == ALREADY_EXISTS:  # lost a race with another replica: fine
            return False
        raise
    return True


async def _rebuild(es: AsyncElasticsearch, name: str) -> None:
    """Replace a state index that lost its strict mapping by a strict one with its documents."""
    await es.indices.refresh(index=name)
    resp = await es.search(index=name, size=COPY_LIMIT, query={"match_all": {}})
    hits = resp["hits"]["hits"]
    log.warning("state index %s has a dynamic mapping (it was recreated by a write after it was "
                "lost); recreating it strict with its %d documents", name, len(hits))  # fmt: skip
    await es.options(ignore_status=404).indices.delete(index=name)
    await _create(es, name)
    if hits:
        ops = [op for h in hits for op in ({"index": {"_id": h["_id"]}}, h["_source"])]
        resp = await es.bulk(index=name, operations=ops, refresh=True)
        refused = [i["index"]["_id"] for i in resp["items"] if i["index"].get("status", 500) >= 300]
        if refused:  # e.g. a field this version does not know: the strict mapping refuses it
            log.warning("state index %s: %d documents could not be carried over (first: %s)",
                        name, len(refused), refused[0])  # fmt: skip


async def _make_strict(es: AsyncElasticsearch, name: str) -> tuple[_Seen, bool]:
    """The state index exists with its strict mapping: (what it is, whether this call made it)."""
    created = False
    for _ in range(REPAIR_ATTEMPTS):
        seen = await _describe(es, name)
        if seen is None:
            created = await _create(es, name) or created
        elif not seen.strict:
            await _rebuild(es, name)
        else:
            return seen, created
    raise RuntimeError(f"state index {name}: could not recreate it with its mapping")


async def ensure_state_index(es: AsyncElasticsearch, name: str) -> bool:
    """Create the state index when missing, else add any field it lacks; True when created.

    The mapping is only put when a field is missing: it needs the ``manage`` privilege,
    which a follower's credentials need not have once the index is up to date."""
    seen, created = await _make_strict(es, name)
    if set(PROPERTIES) - seen.fields:
        await es.indices.put_mapping(index=name, properties=PROPERTIES)
    return created


# ---- reading (status, retry): never creates anything ---------------------------------------


async def read_checkpoints(
    es: AsyncElasticsearch, state: str, shards: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """(index uuid, shard) -> stored checkpoint; -1 where none is stored."""
    keys = list(shards)
    if not keys:
        return {}
    resp = await es.mget(index=state, ids=[state_id(u, s) for u, s in keys])
    out = {}
    for key, doc in zip(keys, resp["docs"], strict=True):
        found = doc.get("found") and doc["_source"].get("checkpoint") is not None
        out[key] = int(doc["_source"]["checkpoint"]) if found else NO_CHECKPOINT
    return out


def failures_query(**terms: Any) -> dict[str, Any]:
    """Failure records whose fields have these values (a list: any of them)."""
    must = [{"term": {"kind": FAILED}}]
    for field, value in terms.items():
        must.append({"terms" if isinstance(value, list) else "term": {field: value}})
    return {"bool": {"filter": must}}


async def read_failures(
    es: AsyncElasticsearch, state: str, names: Sequence[str]
) -> list[FailedDocument]:
    """The failed documents of these configured indices, oldest first.

    A scroll, not sorted pages: it reads a consistent snapshot while followers delete
    records, and sorting in Elasticsearch would need fields a loose state index lacks.
    """
    query = {"query": failures_query(name=list(names))}
    try:
        found = [FailedDocument.from_source(h["_source"])
                 async for h in async_scan(es, query=query, index=state)]  # fmt: skip
    except NotFoundError:  # no state index (yet): nothing failed
        return []
    return sorted(found, key=lambda f: (f.failed_at, f.index, f.doc_id))


async def count_failures(es: AsyncElasticsearch, state: str, names: Sequence[str]) -> int:
    query = failures_query(name=list(names))
    resp = await es.options(ignore_status=404).count(index=state, query=query)
    return int(resp.get("count", 0))


# ---- the feed's store ------------------------------------------------------------------------


class CheckpointStore:
    """The follower's reads and writes of the state index (see the module docstring)."""

    def __init__(self, es: AsyncElasticsearch, index: str) -> None:
        self._es = es
        self._index = index
        self._written: dict[str, dict[str, Any]] = {}  # what we last wrote, by id
        self._state_uuid: str | None = None  # of the state index we wrote it into
        self._repairing = asyncio.Lock()

    async def ensure(self, names: Sequence[str] = ()) -> None:
        """At start: the state index exists, strict, with every field (see ensure_state_index);
        the failure records of ``names`` are held, to be written back if the index is lost."""
        await ensure_state_index(self._es, self._index)
        seen = await _describe(self._es, self._index)
        self._state_uuid = seen.uuid if seen else None
        for f in await read_failures(self._es, self._index, names) if names else []:
            self._written[failure_id(f.uuid, f.shard, f.doc_id)] = {"kind": FAILED, **asdict(f)}

    async def load(self, uuid: str, shard: int) -> int:
        try:
            doc = await self._es.get(index=self._index, id=state_id(uuid, shard))
        except NotFoundError as exc:  # no document, or no state index (e.g. a cluster lost)
            if error_type(exc) == "index_not_found_exception":
                await self.repair()
            return NO_CHECKPOINT
        self._written[state_id(uuid, shard)] = doc["_source"]  # see _put: a lost index shows
        return int(doc["_source"].get("checkpoint", NO_CHECKPOINT))

    async def save(self, name: str, index: str, uuid: str, shard: int, checkpoint: int) -> None:
        document = {
            "kind": CHECKPOINT,
            "name": name,
            "index": index,
            "uuid": uuid,
            "shard": shard,
            "checkpoint": checkpoint,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        await self._put(state_id(uuid, shard), document)

    async def forget(self, uuid: str, shards: int) -> None:
        """Drop the checkpoints and failures of a deleted index (best effort; harmless if left)."""
        self._written = {k: v for k, v in self._written.items() if v.get("uuid") != uuid}
        for shard in range(shards):
            try:
                await self._es.delete(index=self._index, id=state_id(uuid, shard))
            except NotFoundError:
                pass
        await self._es.options(ignore_status=404).delete_by_query(
            index=self._index,
            query=failures_query(uuid=uuid),
            conflicts="proceed",
            refresh=True,
        )

    # ---- failed documents ----------------------------------------------------------------

    async def record_failure(
        self, name: str, uuid: str, shard: int, hit: Mapping[str, Any], reason: str
    ) -> bool:
        """Store the failure of this version of a document; False when it is on record already
        (a page read again after a restart or a retry), so the caller logs it once."""
        doc_id = failure_id(uuid, shard, hit["_id"])
        try:
            old = (await self._es.get(index=self._index, id=doc_id))["_source"]
        except NotFoundError as exc:
            if error_type(exc) == "index_not_found_exception":
                await self.repair()  # else our write would create it with a dynamic mapping
            old = {}
        if old.get("seq_no") == int(hit["_seq_no"]) and old.get("reason") == reason:
            return False
        # Refreshed at once: failures are rare, and `es-embed status` should list them now.
        await self._put(doc_id, failure_source(name, uuid, shard, hit, reason), refresh=True)
        return True

    async def has_failures(self, uuid: str, shard: int) -> bool:
        resp = await self._es.options(ignore_status=404).count(
            index=self._index, query=failures_query(uuid=uuid, shard=shard)
        )
        return int(resp.get("count", 0)) > 0

    async def clear_failures(self, uuid: str, shard: int, seq_nos: Mapping[str, int]) -> int:
        """Delete the records of these documents (_id -> the _seq_no that has now passed) that
        are of that version or an older one; returns how many were deleted."""
        if not seq_nos:
            return 0
        ids = {failure_id(uuid, shard, doc_id): seq for doc_id, seq in seq_nos.items()}
        resp = await self._es.mget(index=self._index, ids=list(ids), source_includes=["seq_no"])
        found = [d for d in resp["docs"] if d.get("found")]
        return await self._delete(
            [d["_id"] for d in found if int(d["_source"].get("seq_no", -1)) <= ids[d["_id"]]]
        )

    async def drop_failures(self, uuid: str, shard: int, doc_ids: Iterable[str]) -> int:
        """Delete the records of documents that no longer exist."""
        return await self._delete([failure_id(uuid, shard, d) for d in doc_ids])

    async def _delete(self, ids: list[str]) -> int:
        if not ids:
            return 0
        for i in ids:
            self._written.pop(i, None)
        ops = [{"delete": {"_index": self._index, "_id": i}} for i in ids]
        resp = await self._es.bulk(operations=ops, refresh=True)
        return sum(1 for item in resp["items"] if item["delete"].get("result") == "deleted")

    # ---- writes that survive a lost state index -------------------------------------------

    async def _put(self, doc_id: str, document: dict[str, Any], *, refresh: bool = False) -> None:
        known = doc_id in self._written
        self._written[doc_id] = document
        try:
            resp = await self._es.index(
                index=self._index, id=doc_id, document=document, refresh=refresh
            )
        except NotFoundError as exc:  # only where action.auto_create_index is off
            if error_type(exc) != "index_not_found_exception":
                raise
            await self.repair()  # writes this document back with the others
            return
        if known and resp.get("result") == "created":
            await self.repair()

    async def repair(self) -> None:
        """Make the state index strict again and, when it is not the one we wrote to, write
        back every document this store knows (its checkpoints and failure records)."""
        async with self._repairing:
            seen, _ = await _make_strict(self._es, self._index)
            uuid = seen.uuid
            if uuid == self._state_uuid:
                return  # repaired already (by us or another store), or a record deleted by others
            log.warning("state index %s was lost; recreated it and writing back %d records",
                        self._index, len(self._written))  # fmt: skip
            self._state_uuid = uuid
            if self._written:
                ops = [op for k, v in self._written.items()
                       for op in ({"index": {"_index": self._index, "_id": k}}, v)]  # fmt: skip
                await self._es.bulk(operations=ops, refresh=True)
