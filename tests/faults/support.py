"""Helpers for the fault tests: a real ``es-embed serve`` process, a TCP proxy that can fail,
and the end-state checks every fault test shares.

The checks read Elasticsearch directly (never through the sidecar under test):

- ``hash_mismatches``: documents whose ``_embed.hash`` is not the hash of their current text
  (or that have text but no vector): a stale or missing vector.
- ``checkpoint_violations``: for each stored checkpoint, documents on that shard with
  ``_seq_no <= checkpoint`` whose vector is not current. A checkpoint "ahead of what was
  written" shows up here, since a write-back gives the document a new, higher ``_seq_no``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from elasticsearch import AsyncElasticsearch

from es_embed.indices.document import content_hash, document_text
from tests.es.follow_support import TcpProxy

REPO = Path(__file__).resolve().parents[2]
TEXT_FIELDS = ("title", "text")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- end-state checks -------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a current document looks like: the hash rule of one index."""

    model: str
    dims: int
    vector_field: str = "embedding"
    text_fields: tuple[str, ...] = TEXT_FIELDS

    def hash(self, text: str) -> str:
        return content_hash(self.model, self.dims, text)

    def is_current(self, source: dict[str, Any]) -> bool:
        text = document_text(source, self.text_fields)
        embed = source.get("_embed") or {}
        vector = source.get(self.vector_field)
        if not text:
            return vector is None and not embed
        try:
            digest = self.hash(text)
        except UnicodeEncodeError:  # a lone surrogate: such a document can only be listed failed
            return False
        return embed.get("hash") == digest and isinstance(vector, list) and len(vector) == self.dims


async def search_all(
    es: AsyncElasticsearch, index: str, query: dict[str, Any] | None = None, **kw: Any
) -> list[dict[str, Any]]:
    resp = await es.search(
        index=index,
        size=10_000,
        query=query or {"match_all": {}},
        source={"exclude_vectors": False},
        seq_no_primary_term=True,
        **kw,
    )
    hits: list[dict[str, Any]] = resp["hits"]["hits"]
    return hits


async def hash_mismatches(es: AsyncElasticsearch, index: str, expect: Expect) -> list[str]:
    await es.indices.refresh(index=index)
    return [h["_id"] for h in await search_all(es, index) if not expect.is_current(h["_source"])]


async def stored_checkpoints(
    es: AsyncElasticsearch, state_index: str
) -> dict[tuple[str, int], int]:
    """(index uuid, shard) -> checkpoint, as stored in the state index."""
    if not await es.indices.exists(index=state_index):
        return {}
    await es.indices.refresh(index=state_index)
    resp = await es.search(index=state_index, size=1000)
    return {
        (h["_source"]["uuid"], int(h["_source"]["shard"])): int(h["_source"]["checkpoint"])
        for h in resp["hits"]["hits"]
        if "checkpoint" in h["_source"]  # not a replica's heartbeat
    }


async def checkpoint_violations(
    es: AsyncElasticsearch, index: str, state_index: str, expect: Expect
) -> list[str]:
    """Documents at or below their shard's stored checkpoint that lack a current vector."""
    await es.indices.refresh(index=index)
    info = await es.indices.get(index=index)
    uuid = info[index]["settings"]["index"]["uuid"]
    bad = []
    for (ck_uuid, shard), checkpoint in (await stored_checkpoints(es, state_index)).items():
        if ck_uuid != uuid:
            continue
        hits = await search_all(
            es,
            index,
            {"range": {"_seq_no": {"lte": checkpoint}}},
            preference=f"_shards:{shard}",
        )
        bad += [h["_id"] for h in hits if not expect.is_current(h["_source"])]
    return bad


async def embedded_at(es: AsyncElasticsearch, index: str) -> dict[str, str]:
    """id -> ``_embed.at`` of every document that has a vector record."""
    await es.indices.refresh(index=index)
    hits = await search_all(es, index, {"exists": {"field": "_embed.hash"}})
    return {h["_id"]: h["_source"]["_embed"]["at"] for h in hits}


async def count_embedded(es: AsyncElasticsearch, index: str) -> int:
    await es.indices.refresh(index=index)
    resp = await es.count(index=index, query={"exists": {"field": "_embed.hash"}})
    return int(resp["count"])


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, step: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(step)


def bulk_docs(index: str, ids: range, words: int = 12, tag: str = "v1") -> list[dict[str, Any]]:
    """Index operations for documents with a few words of varied text each."""
    ops: list[dict[str, Any]] = []
    for i in ids:
        body = " ".join(f"w{(i * 7 + j) % 97}" for j in range(words))
        ops += [{"index": {"_index": index, "_id": str(i)}},
                {"title": f"doc {i} {tag}", "text": f"{tag} {body}"}]  # fmt: skip
    return ops


async def bulk_load(es: AsyncElasticsearch, index: str, n: int, **kw: Any) -> None:
    for start in range(0, n, 1000):
        resp = await es.bulk(operations=bulk_docs(index, range(start, min(n, start + 1000)), **kw))
        assert not resp["errors"], resp


# ---- a TCP proxy that can refuse ------------------------------------------------------------


class CountingProxy(TcpProxy):
    """A TcpProxy that, while ``down``, accepts and drops every connection at once and counts
    them, so a test sees how often a client retried during an outage."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.down = False
        self.refused = 0

    def cut(self) -> None:  # type: ignore[override]  # stays listening, unlike TcpProxy.cut
        """Drop every open connection and refuse new ones until ``restore``."""
        self.down = True
        for writer in list(self._conns):
            writer.close()
        self._conns.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            self.refused += 1
            writer.close()
            return
        await super()._handle(reader, writer)


# ---- a real sidecar process -------------------------------------------------------------


def sidecar_config(
    path: Path,
    *,
    model_dir: Path,
    es_url: str,
    index: str,
    state_index: str,
    dims: int = 64,
    server: dict[str, Any] | None = None,
    follow: dict[str, Any] | None = None,
    batching: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the YAML config of a sidecar; returns the raw mapping (for settings_from_dict)."""
    raw: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": free_port(), **(server or {})},
        "model": {"name": str(model_dir), "served_name": "tiny-qwen", "device": "cpu"},
        "batching": {**(batching or {})},
        "elasticsearch": {"url": es_url},
        "follow": {
            "state_index": state_index,
            "poll_interval": 0.2,
            "page_size": 64,
            "max_backoff": 1.0,
            **(follow or {}),
        },  # fmt: skip
        "indices": [{"name": index, "dims": dims, "text_fields": list(TEXT_FIELDS)}],
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return raw


def sidecar_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ES_EMBED_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",  # a shared machine: one core for the model is plenty
        PYTHONPATH=str(REPO),
    )
    env.update(extra or {})
    return env


@dataclass
class Sidecar:
    """``python -m es_embed.cli serve --config FILE`` as a child process."""

    config: Path
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=sidecar_env)
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "es_embed.cli", "serve", "--config", str(self.config),
               *self.args]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=log)
        log.close()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def wait_healthy(self, timeout: float = 60) -> None:
        async def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"sidecar exited ({self.proc.returncode}):\n{self.log()}")
            return await asyncio.to_thread(self._status, "/health") == 200

        await wait_for(healthy, timeout, "sidecar healthy", step=0.25)

    def _status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def fetch(self, path: str, key: str | None = None) -> tuple[int, str]:
        """GET a path (with a bearer key); the status and body, errors included."""
        req = urllib.request.Request(self.url + path)
        if key is not None:
            req.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        proc = self.proc
        code = await asyncio.to_thread(_wait, proc, timeout)
        if code is None:
            raise AssertionError(f"sidecar still running after {timeout:g} s:\n{self.log()}")
        return code

    def kill(self) -> None:
        """Best-effort end of the child (for test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


@contextlib.asynccontextmanager
async def cleaned_up(es: AsyncElasticsearch, *names: str) -> AsyncIterator[None]:
    """Delete these indices and es-embed's templates for them afterwards."""
    try:
        yield
    finally:
        for name in names:
            await es.options(ignore_status=404).indices.delete(index=name)
            await es.options(ignore_status=404).indices.delete_index_template(
                name=f"es-embed-{name}*"
            )
            await es.options(ignore_status=404).cluster.delete_component_template(
                name=f"es-embed-{name}*"
            )
