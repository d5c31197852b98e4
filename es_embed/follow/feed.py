"""The change feed of one shard: read ``_seq_no`` in (checkpoint, target], embed, write back.

Reading, embedding and writing overlap: while page k is being embedded (and then written),
page k+1 is already being read and queued for the model, so the model never waits for
Elasticsearch. Pages finish in any order but the checkpoint only moves past a page once
it and every page before it are written, so a crash re-reads at most the pages in flight
(and skips those already written: their hash is current).

A document the feed cannot take (text the hash or the model refuses, a vector
Elasticsearch refuses for good) never holds the checkpoint: ``_give_up`` records it in the
state index with its reason and the page goes on. A later version that passes (a rewrite,
or ``es-embed backfill --retry-failed``) deletes the record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from es_embed.elastic.bulk import Action, bulk_write
from es_embed.elastic.refusals import Refusal, RetryLater, Verdict
from es_embed.elastic.retry import Backoff, embed_retrying
from es_embed.embed.service import EmbeddingService
from es_embed.errors import EmbedError, ErrorKind
from es_embed.follow.state import CheckpointStore, FailedDocument
from es_embed.indices.document import (
    DocText,
    Embedded,
    stored_hash,
    unencodable_reason,
    vector_doc,
)
from es_embed.indices.embedding import embed_docs
from es_embed.indices.resolve import IndexTarget

log = logging.getLogger(__name__)

PAGES_IN_FLIGHT = 3  # enough to keep the model fed while a page is read and another written
EMBED_MAX_BACKOFF = 2.0  # a failed model is probed every second or so; asking is cheap
MAX_REASON = 2000  # characters of a failure reason kept (Elasticsearch's can run long)
# The model's refusals of one input, which waiting will not change: its text (too long under
# truncation=error) or its size (413 input_too_large_for_memory: it ran out of the device's
# memory even alone). The document is given up; every other error holds the page.
DOCUMENT_REFUSALS = (ErrorKind.INVALID_REQUEST, ErrorKind.TOO_LARGE)


@dataclass
class Progress:
    checked: int = 0  # documents read from the feed
    embedded: int = 0  # vectors written
    skipped: int = 0  # hash already current, or no text and no vector
    conflicts: int = 0  # write-backs dropped: the document changed or vanished since read
    failed: int = 0  # documents given up (recorded in the state index; see _give_up)
    cleared: int = 0  # vectors removed because the text became empty
    total: int | None = None  # documents to check, when known (backfill)
    recovered: int = 0  # failure records deleted: a later version passed, or the doc is gone

    @property
    def done(self) -> int:
        """Documents finished, whatever the outcome; reading one is not finishing it (a page
        is read long before its embedding ends), so progress and its ETA count these."""
        return self.embedded + self.skipped + self.conflicts + self.failed + self.cleared

    def as_dict(self) -> dict[str, int | None]:
        return {
            k: getattr(self, k)
            for k in ("checked", "embedded", "skipped", "conflicts", "failed", "cleared", "total")
        }


class IndexGone(Exception):
    """The concrete index was deleted while we read it; the follower notices and moves on."""


Todo = tuple[dict[str, Any], DocText, str]  # (hit, text, hash)


class ShardFeed:
    def __init__(
        self,
        es: AsyncElasticsearch,
        service: EmbeddingService,
        target: IndexTarget,
        store: CheckpointStore,
        *,
        index: str,
        uuid: str,
        shard: int,
        page_size: int,
        progress: Progress,
    ) -> None:
        self._es = es
        self._service = service
        self.target = target
        self._store = store
        self.index, self.uuid, self.shard = index, uuid, shard
        self._page_size = page_size
        self.progress = progress
        self.checkpoint = -1  # every operation <= this is written back (or needed nothing)
        self._saved = -2
        self._may_have_failures = True  # until load() asks: spares a lookup per page
        self._given_up: set[tuple[str, int]] = set()  # (id, seq_no) given up in pages in flight

    async def load(self) -> int:
        self.checkpoint = await self._store.load(self.uuid, self.shard)
        self._saved = self.checkpoint
        self._may_have_failures = await self._store.has_failures(self.uuid, self.shard)
        return self.checkpoint

    async def save(self) -> None:
        if self._saved != self.checkpoint:
            await self._store.save(
                self.target.name, self.index, self.uuid, self.shard, self.checkpoint
            )
            self._saved = self.checkpoint

    async def count_pending(self, upto: int) -> int:
        resp = await self._es.count(
            index=self.index,
            preference=f"_shards:{self.shard}",
            query=self._range(self.checkpoint, upto),
        )
        return int(resp["count"])

    # ---- one catch-up: (checkpoint, upto] ---------------------------------------------

    async def catch_up(self, upto: int) -> None:
        """Process every operation up to ``upto`` (a global checkpoint) and store it.

        Raises on failure; the checkpoint then stays at the last fully written page.
        """
        if upto <= self.checkpoint:
            return
        try:
            # Makes every operation up to the global checkpoint visible to search.
            await self._es.indices.refresh(index=self.index)
        except NotFoundError as exc:
            raise IndexGone(self.index) from exc
        in_flight: deque[tuple[int, asyncio.Task[None]]] = deque()
        after = self.checkpoint
        try:
            while True:
                hits = await self._read(after, upto)
                last_page = len(hits) < self._page_size
                if hits:
                    # Everything <= the last hit's _seq_no is in this page or an earlier one.
                    bound = upto if last_page else int(hits[-1]["_seq_no"])
                    in_flight.append((bound, asyncio.create_task(self._process(hits))))
                    after = bound
                while in_flight and (last_page or len(in_flight) >= PAGES_IN_FLIGHT):
                    await self._commit(*in_flight.popleft())
                if last_page:
                    # Operations with no live document (deletes, overwritten versions) count too.
                    self.checkpoint = max(self.checkpoint, upto)
                    await self.save()
                    return
        finally:
            for _, task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.gather(*(t for _, t in in_flight), return_exceptions=True)

    async def _commit(self, bound: int, task: asyncio.Task[None]) -> None:
        await task
        self.checkpoint = bound
        await self.save()

    @staticmethod
    def _range(after: int, upto: int) -> dict[str, Any]:
        return {"range": {"_seq_no": {"gt": after, "lte": upto}}}

    async def _read(self, after: int, upto: int) -> list[dict[str, Any]]:
        try:
            resp = await self._es.search(
                index=self.index,
                preference=f"_shards:{self.shard}",
                query=self._range(after, upto),
                sort=[{"_seq_no": "asc"}],
                size=self._page_size,
                seq_no_primary_term=True,
                source_includes=[*self.target.text_fields, "_embed.hash"],
                track_total_hits=False,
            )
        except NotFoundError as exc:
            raise IndexGone(self.index) from exc
        hits: list[dict[str, Any]] = resp["hits"]["hits"]
        return hits

    # ---- one page ---------------------------------------------------------------------

    async def _process(self, hits: Sequence[dict[str, Any]]) -> None:
        todo, clear = await self._triage(hits)
        vectors = await self._embed(todo)
        # Debug lines a replica's log is counted by: embedded minus written is model work
        # that was lost (a page in flight when the process died or its lease was handed back).
        log.debug(
            "%s shard %d: embedded %d documents",
            self.index,
            self.shard,
            sum(v is not None for v in vectors),
        )
        ops: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for (hit, _, digest), vector in zip(todo, vectors, strict=True):
            if vector is not None:
                ops.append((hit, self._vector_doc(vector, digest)))
        ops.extend((hit, self._vector_doc(None, None)) for hit in clear)
        written, cleared = await self._write(ops)
        log.debug("%s shard %d: wrote %d vectors", self.index, self.shard, written)
        self.progress.embedded += written
        self.progress.cleared += cleared
        await self._clear_failures(hits)

    async def _triage(
        self, hits: Sequence[dict[str, Any]]
    ) -> tuple[list[Todo], list[dict[str, Any]]]:
        """(documents to embed, documents whose vector must go); the rest is skipped or given up."""
        todo: list[Todo] = []
        current: list[Todo] = []  # hash matches: skip if the vector is there
        clear: list[dict[str, Any]] = []
        p = self.progress
        for hit in hits:
            p.checked += 1
            source = hit.get("_source") or {}
            text = self.target.text(source)
            old = stored_hash(source)
            if not text.text:
                if old is None:
                    p.skipped += 1
                else:
                    clear.append(hit)  # text removed: its old vector must go too
                continue
            try:
                digest = self.target.hash(text.text)
            except UnicodeEncodeError:
                await self._give_up(hit, unencodable_reason(source, self.target.text_fields))
                continue
            (current if digest == old else todo).append((hit, text, digest))
        lost = await self._ids_without_vector([hit["_id"] for hit, _, _ in current])
        for entry in current:
            if entry[0]["_id"] in lost:
                todo.append(entry)
            else:
                p.skipped += 1
        return todo, clear

    def _vector_doc(self, vector: Embedded | None, digest: str | None) -> dict[str, Any]:
        t = self.target
        return vector_doc(t.vector_field, t.model, t.dims, vector, digest)

    async def _ids_without_vector(self, ids: list[str]) -> set[str]:
        """Which of these documents lost their vector but kept a current ``_embed``.

        Elasticsearch 9 leaves vectors out of ``_source`` by default, so a client that
        reads a document and writes it back whole drops the vector while ``_embed`` still
        matches the text. Asked only about documents whose hash matches, so a page of our
        own write-backs costs one cheap filter query.
        """
        if not ids:
            return set()
        field = self.target.vector_field
        has_vector: dict[str, Any] = {"exists": {"field": field}}
        if self.target.passages is not None:  # exists does not look inside nested objects
            has_vector = {
                "nested": {"path": field, "query": {"exists": {"field": f"{field}.vector"}}}
            }
        resp = await self._es.search(
            index=self.index,
            preference=f"_shards:{self.shard}",
            query={"bool": {"filter": [{"ids": {"values": ids}}], "must_not": [has_vector]}},
            size=len(ids),
            source=False,
            track_total_hits=False,
        )
        return {hit["_id"] for hit in resp["hits"]["hits"]}

    async def _embed(self, todo: list[Todo]) -> list[Embedded | None]:
        """Vectors (or passages) in order; None for a document the model refuses (given up)."""
        texts = [text for _, text, _ in todo]
        if len(texts) > 1:
            try:
                return list(await self._embed_retrying(texts))
            except EmbedError as exc:
                if exc.kind not in DOCUMENT_REFUSALS:
                    raise
        # One input is refused (too long under truncation=error, or too large for the device's
        # memory even alone): find it, keep the rest.
        out: list[Embedded | None] = []
        for hit, text, _ in todo:
            try:
                out.append((await self._embed_retrying([text]))[0])
            except EmbedError as exc:
                if exc.kind not in DOCUMENT_REFUSALS:
                    raise
                await self._give_up(hit, f"the model refused its text: {exc.message}")
                out.append(None)
        return out

    async def _embed_retrying(self, texts: list[DocText]) -> list[Embedded]:
        return await embed_retrying(
            lambda: embed_docs(self._service, self.target, texts),
            Backoff(0.1, EMBED_MAX_BACKOFF),
            f"{self.index} shard {self.shard}",
        )

    # ---- failed documents -----------------------------------------------------------------

    async def _give_up(self, hit: Mapping[str, Any], reason: str) -> None:
        """Record a document the feed cannot take and skip it, so it never blocks the shard.

        Every document-level failure comes here. The record (index, id, _seq_no, reason,
        time) is written before the checkpoint can pass the document, so nothing is skipped
        unrecorded; a version already on record with the same reason (a page read again)
        is neither logged nor written again.
        """
        reason = reason[:MAX_REASON]
        self._given_up.add((hit["_id"], int(hit["_seq_no"])))
        self._may_have_failures = True
        new = await self._store.record_failure(self.target.name, self.uuid, self.shard, hit, reason)
        self.progress.failed += 1  # after the record: the follower's gauge counts records then
        if new:
            log.error("%s: document %s is skipped and listed as failed (es-embed status): %s",
                      hit["_index"], hit["_id"], reason)  # fmt: skip

    async def _clear_failures(self, hits: Sequence[Mapping[str, Any]]) -> None:
        """Documents of this page that were not given up lose any older failure record."""
        versions = {(hit["_id"], int(hit["_seq_no"])) for hit in hits}
        failed = versions & self._given_up
        self._given_up -= failed
        if self._may_have_failures:
            passed = dict(versions - failed)
            cleared = await self._store.clear_failures(self.uuid, self.shard, passed)
            self.progress.recovered += cleared

    async def retry(self, records: Sequence[FailedDocument]) -> None:
        """Take these failed documents again, at their current version, as one page."""
        docs = [{"_id": r.doc_id, **({"routing": r.routing} if r.routing else {})} for r in records]
        resp = await self._es.mget(
            index=self.index, docs=docs, source_includes=[*self.target.text_fields, "_embed.hash"]
        )
        found = [d for d in resp["docs"] if d.get("found")]
        gone = [d["_id"] for d in resp["docs"] if d.get("found") is False]
        self._may_have_failures = True
        await self._process(found)
        self.progress.recovered += await self._store.drop_failures(self.uuid, self.shard, gone)

    async def _write(self, ops: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[int, int]:
        """Bulk update with if_seq_no/if_primary_term; returns (vectors written, cleared).

        Refusals follow the one table (``elastic/refusals.py``): a conflict is dropped (the
        newer version is in the feed), a final refusal is given up, and a retryable one
        (write block, 429 after the client's own retries, 5xx, shards moving) raises
        ``RetryLater`` so the page is retried and the checkpoint never passes the document.
        """
        if not ops:
            return 0, 0
        outcomes = await bulk_write(self._es, [self._update_action(hit, doc) for hit, doc in ops])
        written = cleared = 0
        held: list[Refusal] = []
        for (hit, doc), outcome in zip(ops, outcomes, strict=True):
            refusal = outcome.refusal
            if refusal is None:
                if doc.get("_embed") is None:
                    cleared += 1
                else:
                    written += 1
            elif refusal.verdict is Verdict.CONFLICT:
                self.progress.conflicts += 1
            elif refusal.verdict is Verdict.RETRYABLE:
                held.append(refusal)
            else:
                await self._give_up(hit, f"Elasticsearch refused its vector: {refusal}")
        if held:
            # The page is processed again; what was written now is skipped then by hash.
            self.progress.embedded += written
            self.progress.cleared += cleared
            raise RetryLater(self.index, held[0], len(held))
        return written, cleared

    @staticmethod
    def _update_action(hit: dict[str, Any], doc: dict[str, Any]) -> Action:
        meta = {
            "_index": hit["_index"],
            "_id": hit["_id"],
            "if_seq_no": hit["_seq_no"],
            "if_primary_term": hit["_primary_term"],
        }
        if hit.get("_routing") is not None:
            meta["routing"] = hit["_routing"]
        return {"update": meta}, {"doc": doc}
