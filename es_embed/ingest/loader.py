"""``es-embed ingest``: first loads from JSONL, with vectors computed before indexing.

Each document is written once, with its vector and ``_embed`` already set, so the
follower reads it back, finds the hash current and skips it: no second write.

Bad input: the file is read twice. The first pass validates every line (JSON object,
an id when an id field is used) and fails on the first bad line, naming its number,
before anything is written: a bad file leaves the index untouched. ``--dry-run`` stops
after that pass. The second pass embeds (bulk lane) and bulk-indexes in chunks bounded
by count and bytes; embedding chunk k+1 overlaps writing chunk k. Refusals follow the one
table (``elastic/refusals.py``): a 429, a write block, a 5xx or no answer is retried with
exponential backoff until it passes; a final refusal is counted, and its first reason
reported. A text the model's device cannot hold even alone (413 ``input_too_large_for_memory``)
does not stop the load: that document is written without a vector (searchable by BM25),
counted and reported, and the follower lists it as failed (``es-embed status``) when it
reads it, as it does any document the model refuses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elasticsearch import AsyncElasticsearch, TransportError

from es_embed.elastic.bulk import BulkRetry, Outcome, bulk_write
from es_embed.elastic.refusals import Refusal, Verdict, classify_error
from es_embed.elastic.retry import Backoff, embed_retrying
from es_embed.embed.service import EmbeddingService
from es_embed.errors import EmbedError, ErrorKind, invalid
from es_embed.indices.document import DocText, vector_doc
from es_embed.indices.embedding import embed_docs
from es_embed.indices.resolve import IndexTarget

log = logging.getLogger(__name__)

CHUNKS_IN_FLIGHT = 2
# Texts per embedding request within a chunk: progress is reported as each one returns
# (a 500-document chunk can take a minute on a CPU), while the batcher still sees them all.
PROGRESS_SLICE = 64
PASSAGES_PER_DOC_ESTIMATE = 4

Op = tuple[dict[str, Any], dict[str, Any], bool]  # action line, document, has a vector


@dataclass(frozen=True)
class IngestOptions:
    id_field: str | None = "_id"  # None: Elasticsearch assigns ids
    fields: tuple[str, ...] | None = None  # fields copied into the document; None = all
    chunk_docs: int = 500
    chunk_bytes: int = 8 * 1024 * 1024
    max_backoff: float = 30.0


@dataclass
class IngestResult:
    lines: int = 0  # documents in the file
    ready: int = 0  # documents past the model (vector computed, or no text), written or not
    indexed: int = 0
    embedded: int = 0  # documents written with a vector (the rest had no text)
    failed: int = 0
    first_error: str | None = None
    retries: int = 0  # resends of documents refused for now (after the client's 429 retries)
    # Written without a vector: too large for the model's memory even alone (413).
    unembedded: int = 0
    first_unembedded: str | None = None


@dataclass(frozen=True)
class Line:
    number: int
    doc_id: str | None
    source: dict[str, Any]
    size: int  # bytes of the line, for chunking


def _bad(path: Path, number: int, why: str) -> EmbedError:
    return invalid(f"{path}:{number}: {why}", param=f"line {number}", code="bad_line")


def read_lines(path: Path, options: IngestOptions) -> Iterator[Line]:
    """Parse and check each line; raises EmbedError naming the first bad line."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise invalid(f"cannot read {path}: {exc.strerror}", param="file") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _bad(path, number, f"not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise _bad(path, number, f"expected a JSON object, got {type(obj).__name__}")
            if b"\\ud" in raw.lower():  # an escaped surrogate; a lone one cannot be sent on
                _check_unicode(obj, path, number)
            doc_id = None
            if options.id_field:
                value = obj.get(options.id_field)
                if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
                    raise _bad(path, number, f"missing or empty id field {options.id_field!r}")
                doc_id = str(value)
                if len(doc_id.encode()) > 512:
                    raise _bad(path, number, f"id longer than 512 bytes: {doc_id[:40]}...")
            if options.fields is None:
                source = {k: v for k, v in obj.items() if k != options.id_field}
            else:
                source = {k: obj[k] for k in options.fields if k in obj}
            for key in source:
                if key.startswith("_") and key != "_embed":
                    raise _bad(path, number, f"field {key!r} is a metadata field name")
            yield Line(number, doc_id, source, len(raw))


def _check_unicode(obj: dict[str, Any], path: Path, number: int) -> None:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        char = ascii(exc.object[exc.start])
        why = f"contains a lone surrogate ({char}), which is not valid Unicode text"
        raise _bad(path, number, why) from None


def validate(path: Path, options: IngestOptions) -> int:
    """Number of documents; raises on the first bad line."""
    return sum(1 for _ in read_lines(path, options))


def chunks(
    lines: Iterator[Line], options: IngestOptions, vector_bytes: int
) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    size = 0
    for line in lines:
        cost = line.size + vector_bytes
        if chunk and (len(chunk) >= options.chunk_docs or size + cost > options.chunk_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(line)
        size += cost
    if chunk:
        yield chunk


class Loader:
    def __init__(
        self,
        es: AsyncElasticsearch,
        service: EmbeddingService,
        target: IndexTarget,
        options: IngestOptions,
        on_progress: Callable[[IngestResult], None] | None = None,
    ) -> None:
        self._es = es
        self._service = service
        self._target = target
        self._options = options
        self._on_progress = on_progress or (lambda _: None)
        self.result = IngestResult()

    async def run(
        self, path: Path, *, dry_run: bool = False, validated_lines: int | None = None
    ) -> IngestResult:
        """Validate every line (unless the caller just did: ``validated_lines``), then load."""
        if validated_lines is None:
            validated_lines = validate(path, self._options)
        return await self.load(read_lines(path, self._options), validated_lines, dry_run=dry_run)

    async def load(
        self, lines: Iterator[Line], count: int, *, dry_run: bool = False
    ) -> IngestResult:
        """Load documents already validated; ``count`` of them, for progress (JSONL lines,
        or the files of a folder parsed by ``ingest/files.py``)."""
        self.result.lines = count
        if dry_run:
            return self.result
        in_flight: deque[asyncio.Task[None]] = deque()
        vector_bytes = self._target.dims * 12  # ~12 JSON characters per component
        if self._target.passages is not None:
            # A chunk's bytes are only a bound on the request size: assume a few passages.
            vector_bytes *= PASSAGES_PER_DOC_ESTIMATE
        try:
            for chunk in chunks(lines, self._options, vector_bytes):
                in_flight.append(asyncio.create_task(self._chunk(chunk)))
                if len(in_flight) >= CHUNKS_IN_FLIGHT:
                    await in_flight.popleft()
            while in_flight:
                await in_flight.popleft()
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        return self.result

    async def _chunk(self, chunk: list[Line]) -> None:
        texts = [self._target.text(line.source) for line in chunk]
        wanted = [i for i, t in enumerate(texts) if t.text]
        self.result.ready += len(chunk) - len(wanted)  # no text: nothing to wait for
        vectors = await self._embed_reporting([texts[i] for i in wanted])
        docs = [dict(line.source) for line in chunk]
        for i, vector in zip(wanted, vectors, strict=True):
            if isinstance(vector, EmbedError):
                self._unembedded(chunk[i], vector)
                continue
            t = self._target
            digest = t.hash(texts[i].text)
            docs[i].update(vector_doc(t.vector_field, t.model, t.dims, vector, digest))
        ops = []
        for line, doc in zip(chunk, docs, strict=True):
            # A generated id (20 URL-safe characters, like Elasticsearch's own) lets each
            # outcome be matched to its document and a resend overwrite, never duplicate.
            doc_id = line.doc_id if line.doc_id is not None else secrets.token_urlsafe(15)
            meta: dict[str, Any] = {"_index": self._target.name, "_id": doc_id}
            ops.append(({"index": meta}, doc, "_embed" in doc))
        await self._bulk(ops)
        self._on_progress(self.result)

    async def _embed_reporting(self, texts: list[DocText]) -> list[Any]:
        """Vectors in order, requested in slices submitted together, each reported when done."""

        async def one(part: list[DocText]) -> Any:
            vectors = await self._embed(part)
            self.result.ready += len(part)
            self._on_progress(self.result)
            return vectors

        step = PROGRESS_SLICE
        tasks = [asyncio.create_task(one(texts[i : i + step])) for i in range(0, len(texts), step)]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one slice failed (or we were cancelled): drop the others
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [vector for part in parts for vector in part]

    def _unembedded(self, line: Line, error: EmbedError) -> None:
        self.result.unembedded += 1
        if self.result.first_unembedded is None:
            where = f"document {line.doc_id}" if line.doc_id is not None else "a document"
            self.result.first_unembedded = f"{where} (line {line.number}): {error.message}"

    async def _embed(self, texts: list[DocText]) -> list[Any]:
        """Vectors in order; the error in place of a text too large for memory even alone
        (found by embedding the texts one by one once a request of several was refused)."""
        try:
            return list(await self._embed_all(texts))
        except EmbedError as exc:
            if exc.kind is not ErrorKind.TOO_LARGE:
                raise
            if len(texts) == 1:
                return [exc]
        out: list[Any] = []
        for text in texts:
            out.extend(await self._embed([text]))
        return out

    async def _embed_all(self, texts: list[DocText]) -> Any:
        return await embed_retrying(
            lambda: embed_docs(self._service, self._target, texts),
            Backoff(0.1, self._options.max_backoff),
            f"ingest into {self._target.name}",
        )

    async def _bulk(self, ops: list[Op]) -> None:
        """Write until every document is written or refused for good.

        The client waits out 429s first; what is still refused for now (write block, 5xx,
        shards moving, no answer at all) is sent again with backoff, without limit: every
        document has an id, so a resend overwrites instead of duplicating. A final refusal
        or a conflict is counted, the first reported.
        """
        cap = self._options.max_backoff
        backoff = Backoff(min(0.5, cap), cap)
        retry = BulkRetry(initial_backoff=min(0.5, cap), max_backoff=cap)
        while True:
            why: Refusal | None
            actions = [(meta, doc) for meta, doc, _ in ops]
            try:
                outcomes = await bulk_write(
                    self._es, actions, retry, max_chunk_bytes=self._options.chunk_bytes
                )
            except TransportError as exc:  # no answer: every document is refused for now
                held, why = ops, classify_error(exc)
                if why.verdict is not Verdict.RETRYABLE:
                    raise
            else:
                held, why = self._count(ops, outcomes)
            if not held:
                return
            ops = held
            self.result.retries += 1
            delay = backoff.next()
            log.warning("ingest into %s: %d documents refused for now (%s); retrying in %.1f s",
                        self._target.name, len(ops), why, delay)  # fmt: skip
            await asyncio.sleep(delay)

    def _count(self, ops: list[Op], outcomes: list[Outcome]) -> tuple[list[Op], Refusal | None]:
        """Count what was written or refused for good; the ops to send again, and why."""
        held: list[Op] = []
        why = None
        for op, outcome in zip(ops, outcomes, strict=True):
            refusal = outcome.refusal
            if refusal is None:
                self.result.indexed += 1
                self.result.embedded += op[2]
            elif refusal.verdict is Verdict.RETRYABLE:
                held.append(op)
                why = why or refusal
            else:
                self.result.failed += 1
                if self.result.first_error is None:
                    doc_id = op[0]["index"]["_id"]
                    self.result.first_error = f"document {doc_id}: {refusal}"
        return held, why
