"""es-embed ingest: documents land with their vectors, a bad file writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from es_embed.errors import EmbedError
from es_embed.ingest.loader import IngestOptions, Loader
from tests.es.follow_support import (
    all_docs,
    followed_index,
    running,
    stale_documents,
    wait_until,
)

pytestmark = pytest.mark.es


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [{"_id": f"d{i}", "title": f"Title {i}", "text": f"body number {i}"} for i in range(23)]


async def test_ingest_writes_vectors_and_the_follower_then_skips_them(
    es_url: str, tmp_path: Path
) -> None:
    rows = [*ROWS, {"_id": "empty", "title": "", "text": ""}]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    async with followed_index(es_url) as env:
        loader = Loader(env.es, env.service, env.target, IngestOptions(chunk_docs=5))
        result = await loader.run(path)
        assert (result.lines, result.indexed, result.embedded, result.failed) == (24, 24, 23, 0)
        docs = await all_docs(env.es, env.index)
        assert len(docs) == 24 and stale_documents(env, docs) == []
        assert env.encoder.encoded_inputs == 23

        follower = env.follower()
        progress = await follower.run_once_to_current()
        assert progress.checked == 24
        assert progress.embedded == 0  # every hash already current
        assert env.encoder.encoded_inputs == 23


async def test_a_bad_line_is_reported_by_number_and_nothing_is_written(
    es_url: str, tmp_path: Path
) -> None:
    rows: list[object] = [*ROWS[:10], ["not", "an", "object"], *ROWS[10:]]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    async with followed_index(es_url) as env:
        loader = Loader(env.es, env.service, env.target, IngestOptions(chunk_docs=5))
        with pytest.raises(EmbedError) as err:
            await loader.run(path)
        assert ":11:" in err.value.message and err.value.param == "line 11"
        assert await all_docs(env.es, env.index) == {}
        assert env.encoder.encoded_inputs == 0


async def test_dry_run_validates_without_writing(es_url: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", ROWS)
    async with followed_index(es_url) as env:
        result = await Loader(env.es, env.service, env.target, IngestOptions()).run(
            path, dry_run=True
        )
        assert result.lines == 23 and result.indexed == 0
        assert await all_docs(env.es, env.index) == {}


async def test_ingest_while_following_never_embeds_twice(es_url: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", ROWS)
    async with followed_index(es_url) as env, running(env.follower()) as follower:
        await Loader(env.es, env.service, env.target, IngestOptions(chunk_docs=4)).run(path)

        async def all_seen() -> bool:
            return follower.progress.checked >= 23

        await wait_until(all_seen, what="the follower read the loaded documents")
        assert env.encoder.encoded_inputs == 23
        assert follower.progress.embedded == 0
