"""``es-embed ingest`` shows progress while a chunk is embedded, timed from the model's load.

The command runs as written, with the fake encoder behind the real service and a bulk API
that notes what stderr (not a terminal) showed before the first write. Time is the test's
own clock: loading the model takes 100 s of it and every forward pass one second, so the
rate on the line says whether the load was counted, with no real waiting.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.cli import ingest, progress
from es_embed.config import BatchSettings, ModelSettings, Settings, settings_from_dict
from es_embed.embed.protocol import Tokenized
from es_embed.embed.service import EmbeddingService
from es_embed.errors import EmbedError, ErrorKind
from es_embed.indices.resolve import resolve_index
from es_embed.ingest.loader import IngestOptions, Loader
from tests.fakes import FakeEncoder, OutOfMemoryEncoder, ScriptedBulk
from tests.service_support import service_standin

LOAD_SECONDS = 100.0
DOCS = 200


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class TickingEncoder(FakeEncoder):
    """Each forward pass takes one second of the test's clock."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        out = super().forward(batch)
        self.clock.now += 1.0
        return out


class Bulk(ScriptedBulk):
    """A bulk API accepting every document; keeps stderr as it was at the first write."""

    def __init__(self, capsys: pytest.CaptureFixture[str] | None = None) -> None:
        super().__init__()
        self._capsys = capsys
        self.before_first_write: str | None = None

    @property
    def writes(self) -> int:
        return len(self.calls)

    def answer(self, body: bytes) -> tuple[int, dict[str, Any]]:
        if self._capsys is not None and self.before_first_write is None:
            self.before_first_write = self._capsys.readouterr().err
        return super().answer(body)


def jsonl(tmp_path: Path, texts: list[str]) -> Path:
    path = tmp_path / "docs.jsonl"
    rows = (json.dumps({"_id": str(i), "text": t}) for i, t in enumerate(texts))
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def settings() -> Settings:
    return settings_from_dict({"indices": [{"name": "docs", "dims": 32}]})


async def test_progress_shows_before_the_first_write_and_its_rate_leaves_out_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    encoder = TickingEncoder(clock)
    bulk = Bulk(capsys)

    def load(_: Settings) -> None:
        clock.now += LOAD_SECONDS  # what a real model costs before the first document

    loaded_model = service_standin(encoder, BatchSettings(max_batch_size=16), on_load=load)

    @contextlib.asynccontextmanager
    async def client(_: Settings) -> AsyncIterator[AsyncElasticsearch]:
        es = bulk.client()
        try:
            yield es
        finally:
            await es.close()

    monkeypatch.setattr(progress, "time", clock)
    monkeypatch.setattr(ingest, "embedding_service", loaded_model)
    monkeypatch.setattr(ingest, "es_client", client)
    path = jsonl(tmp_path, [f"document number {i}" for i in range(DOCS)])
    # One chunk of 200 (the default is 500 per bulk request): a single write at the end.
    assert await ingest._run(settings(), "docs", path, IngestOptions()) == 0

    assert bulk.writes == 1 and bulk.before_first_write is not None
    early = re.findall(rf"^embedded (\d+)/{DOCS} .* indexed 0 ", bulk.before_first_write, re.M)
    assert early and 0 < int(early[0]) < DOCS, bulk.before_first_write
    final = capsys.readouterr().err.strip().splitlines()[-1]
    busy = float(encoder.forward_calls)  # seconds of the test's clock spent embedding
    assert final == f"embedded {DOCS}/{DOCS} (100%) indexed {DOCS} failed 0 " + (
        f"{DOCS / busy:,.0f} docs/s"
    )
    assert f"{DOCS / busy:,.0f}" != f"{DOCS / (busy + LOAD_SECONDS):,.0f}"  # it can tell


@contextlib.asynccontextmanager
async def loader_on(
    encoder: FakeEncoder, model: ModelSettings
) -> AsyncIterator[tuple[Loader, Bulk]]:
    """A loader over a started service on ``encoder`` and a bulk API accepting everything."""
    service = EmbeddingService(encoder, BatchSettings(), model)
    await service.start()
    bulk = Bulk()
    es = bulk.client()
    try:
        target = resolve_index(settings().indices[0], service.info.shape)
        yield Loader(es, service, target, IngestOptions()), bulk
    finally:
        await es.close()
        await service.stop()


async def test_a_refused_slice_fails_the_chunk_with_its_own_error(tmp_path: Path) -> None:
    texts = [f"document number {i}" for i in range(DOCS)]
    texts[150] = " ".join(["word"] * 40)  # over max_length, in the third slice
    encoder = FakeEncoder(max_length=16)
    async with loader_on(encoder, ModelSettings(truncation="error")) as (loader, bulk):
        with pytest.raises(EmbedError) as err:
            await loader.run(jsonl(tmp_path, texts))
    assert err.value.kind is ErrorKind.INVALID_REQUEST and "tokens" in err.value.message
    assert bulk.writes == 0 and loader.result.indexed == 0


async def test_a_text_too_large_for_memory_is_written_without_a_vector(tmp_path: Path) -> None:
    texts = [f"document number {i}" for i in range(DOCS)]
    texts[150] = " ".join(f"word{i}" for i in range(40))  # 41 tokens: never fits alone
    encoder = OutOfMemoryEncoder(most_inputs=64, most_tokens=30)
    async with loader_on(encoder, ModelSettings(name="fake")) as (loader, bulk):
        result = await loader.run(jsonl(tmp_path, texts))
    assert (result.indexed, result.embedded, result.failed) == (DOCS, DOCS - 1, 0)
    assert result.unembedded == 1
    assert result.first_unembedded is not None
    assert result.first_unembedded.startswith("document 150 (line 151): input[0] has 41 tokens")
    huge = bulk.sources["150"]
    assert "embedding" not in huge and "_embed" not in huge and huge["text"] == texts[150]
    assert all("embedding" in src for doc_id, src in bulk.sources.items() if doc_id != "150")
