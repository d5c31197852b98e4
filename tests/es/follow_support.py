"""Helpers for the follower tests: a followed index on the real node, with a counting fake."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from elasticsearch import ApiError, AsyncElasticsearch

from es_embed.config import BatchSettings, ModelSettings, Settings, settings_from_dict
from es_embed.embed.service import EmbeddingService, truncate_and_normalize
from es_embed.follow.follower import Follower
from es_embed.follow.state import FailedDocument, read_failures
from es_embed.indices.document import document_text
from es_embed.indices.resolve import IndexTarget, resolve_index
from es_embed.metrics import Registry
from es_embed.provision.setup import Setup
from tests.fakes import ANY_SHAPE, FakeEncoder

DIMS = 32
FRESH_SECONDS = 5.0  # the bound: a write has its vector within 5 s


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_settings(
    index: str, state: str, follow: dict[str, Any] | None = None, **index_conf: Any
) -> Settings:
    conf = {"name": index, "dims": DIMS, **index_conf}
    follow = {"state_index": state, "poll_interval": 0.1, "page_size": 64, **(follow or {})}
    return settings_from_dict({"indices": [conf], "follow": follow})


@dataclass
class Env:
    es: AsyncElasticsearch
    service: EmbeddingService
    encoder: FakeEncoder
    settings: Settings
    index: str
    follower_es: AsyncElasticsearch | None = None  # e.g. through a proxy that can fail

    @property
    def state(self) -> str:
        return self.settings.follow.state_index

    @property
    def target(self) -> IndexTarget:
        return resolve_index(self.settings.indices[0], self.service.info.shape)

    def follower(self, registry: Registry | None = None) -> Follower:
        es = self.follower_es or self.es
        return Follower(
            es,
            self.service,
            resolve_index(self.settings.indices[0], self.service.info.shape),
            self.settings.follow,
            registry,
        )


@contextlib.asynccontextmanager
async def followed_index(
    es_url: str,
    *,
    encoder: FakeEncoder | None = None,
    setup: bool = True,
    follow: dict[str, Any] | None = None,
    es_url_for_follower: str | None = None,
    model: ModelSettings | None = None,
    **index_conf: Any,
) -> AsyncIterator[Env]:
    """An index (set up, unless told not to) and a started service; both cleaned up after."""
    index = unique("follow")
    state = unique("state")
    settings = make_settings(index, state, follow, **index_conf)
    es = AsyncElasticsearch(es_url, request_timeout=30)
    encoder = encoder or FakeEncoder()
    service = EmbeddingService(encoder, BatchSettings(), model or ModelSettings(name="fake"))
    await service.start()
    try:
        if setup:
            await Setup(es, settings, ANY_SHAPE).run()
        follower_es = None
        if es_url_for_follower:
            follower_es = AsyncElasticsearch(es_url_for_follower, request_timeout=5)
        try:
            yield Env(es, service, encoder, settings, index, follower_es)
        finally:
            if follower_es is not None:
                await follower_es.close()
    finally:
        await service.stop()
        await es.options(ignore_status=404).indices.delete(index=f"{index}*,{state}")
        await es.options(ignore_status=404).indices.delete_index_template(name=f"es-embed-{index}*")
        await es.options(ignore_status=404).cluster.delete_component_template(
            name=f"es-embed-{index}*"
        )
        await es.close()


@contextlib.asynccontextmanager
async def running(follower: Follower) -> AsyncIterator[Follower]:
    task = asyncio.create_task(follower.run())
    try:
        yield follower
    finally:
        await follower.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled() or task.exception() is None


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = FRESH_SECONDS, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.1)


async def all_docs(es: AsyncElasticsearch, index: str) -> dict[str, dict[str, Any]]:
    await es.indices.refresh(index=index)
    # Elasticsearch 9 leaves vectors out of _source unless asked.
    resp = await es.search(
        index=index, size=10_000, query={"match_all": {}}, source={"exclude_vectors": False}
    )
    return {h["_id"]: h["_source"] for h in resp["hits"]["hits"]}


_REFERENCE = FakeEncoder()  # same deterministic vectors, its own call counters


def expected_vector(text: str, dims: int = DIMS) -> np.ndarray:
    raw = _REFERENCE.forward(_REFERENCE.tokenize([text]))
    return truncate_and_normalize(raw, dims)[0]


def stale_documents(env: Env, docs: dict[str, dict[str, Any]]) -> list[str]:
    """Ids whose vector or hash is not that of their current text (or that have no vector)."""
    target = env.target
    bad = []
    for doc_id, source in docs.items():
        text = document_text(source, target.text_fields)
        embed = source.get("_embed") or {}
        vector = source.get(target.vector_field)
        if not text:
            if vector is not None or embed:
                bad.append(doc_id)
            continue
        try:
            digest = target.hash(text)
        except UnicodeEncodeError:  # a lone surrogate: no vector can be of this text
            bad.append(doc_id)
            continue
        if embed.get("hash") != digest or vector is None:
            bad.append(doc_id)
        elif not np.allclose(vector, expected_vector(text), atol=1e-5):
            bad.append(doc_id)
    return bad


async def all_current(env: Env) -> bool:
    return not stale_documents(env, await all_docs(env.es, env.index))


async def only_failed_left(env: Env, *ids: str) -> bool:
    """Every document but ``ids`` has the vector of its current text; those are listed failed."""
    stale = stale_documents(env, await all_docs(env.es, env.index))
    return stale == sorted(ids) and set(ids) <= set(await failures(env))


async def failures(env: Env) -> dict[str, FailedDocument]:
    """Document id -> its failure record (the state index is refreshed on every record).

    Empty, not an error, while a state index being created has no shard yet (503): the
    follower creates it while tests poll, and an empty answer only makes them wait longer.
    """
    try:
        found = await read_failures(env.es, env.state, [env.index])
    except ApiError as exc:
        if exc.meta.status != 503:
            raise
        return {}
    return {f.doc_id: f for f in found}


async def unaccounted(env: Env) -> list[str]:
    """Documents with neither the vector of their current text nor a failure record, with a
    reason, of their current version: what must be empty after every fault."""
    docs = await all_docs(env.es, env.index)
    resp = await env.es.search(index=env.index, size=10_000, seq_no_primary_term=True,
                               source=False)  # fmt: skip
    seq_nos = {h["_id"]: h["_seq_no"] for h in resp["hits"]["hits"]}
    listed = await failures(env)
    return [
        doc_id
        for doc_id in stale_documents(env, docs)
        if doc_id not in listed
        or listed[doc_id].seq_no != seq_nos[doc_id]
        or not listed[doc_id].reason
    ]


async def put_raw(es: AsyncElasticsearch, index: str, doc_id: str, body: bytes) -> int:
    """Index a document from raw JSON bytes, as curl would; returns its _seq_no.

    The client cannot send a lone surrogate (it encodes to UTF-8 first), but JSON can carry
    one as an escape, and Elasticsearch stores it: ``{"title": "lone \\ud800 surrogate"}``.
    """
    resp = await es.perform_request(
        "PUT",
        f"/{index}/_doc/{doc_id}",
        headers={"content-type": "application/json", "accept": "application/json"},
        body=body,
    )
    return int(resp["_seq_no"])


POISON = b'{"title": "lone \\ud800 surrogate", "text": "abc"}'


class TcpProxy:
    """A TCP forwarder to the node that a test can cut and restore: an outage on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop open ones (the port stays ours)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._conns):
            writer.close()
        self._conns.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._conns.difference_update((writer, up_writer))
