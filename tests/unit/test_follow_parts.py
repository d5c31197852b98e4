"""Loader parsing and retries, the progress line, the client settings, backoff."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from es_embed.cli.progress import ProgressLine, render
from es_embed.config import (
    BatchSettings,
    ConfigError,
    ElasticsearchSettings,
    IndexSettings,
    ModelSettings,
)
from es_embed.elastic.client import client_kwargs, describe_client
from es_embed.elastic.retry import Backoff
from es_embed.embed.service import EmbeddingService
from es_embed.errors import EmbedError
from es_embed.indices.resolve import resolve_index
from es_embed.ingest.loader import (
    IngestOptions,
    IngestResult,
    Line,
    Loader,
    chunks,
    read_lines,
    validate,
)
from tests.fakes import FakeEncoder, ScriptedBulk, Whole


def jsonl(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"title": "no id"}', "missing or empty id field '_id'"),
        ('{"_id": "", "title": "x"}', "missing or empty id field"),
        ('{"_id": "x", "_source": "meta"}', "metadata field"),
    ],
)
def test_the_first_bad_line_is_named_by_number(tmp_path: Path, bad: str, words: str) -> None:
    path = jsonl(tmp_path, ['{"_id": "a", "title": "ok"}', "", bad, "{also bad"])
    with pytest.raises(EmbedError) as err:
        validate(path, IngestOptions())
    assert f"{path}:3:" in err.value.message and words in err.value.message
    assert err.value.param == "line 3"


def test_fields_and_id_field_options(tmp_path: Path) -> None:
    path = jsonl(tmp_path, ['{"doc": 7, "title": "T", "text": "B", "extra": 1}'])
    (line,) = read_lines(path, IngestOptions(id_field="doc", fields=("title", "text")))
    assert (line.doc_id, line.source) == ("7", {"title": "T", "text": "B"})
    (line,) = read_lines(path, IngestOptions(id_field=None))
    assert line.doc_id is None and line.source["doc"] == 7


def test_chunks_are_bounded_by_count_and_bytes() -> None:
    lines = [Line(i, str(i), {}, 100) for i in range(10)]
    sizes = [len(c) for c in chunks(iter(lines), IngestOptions(chunk_docs=4), 0)]
    assert sizes == [4, 4, 2]
    sizes = [len(c) for c in chunks(iter(lines), IngestOptions(chunk_bytes=350), 50)]
    assert sizes == [2, 2, 2, 2, 2]  # 150 bytes each with the vector estimate


TOO_MANY = (429, "es_rejected_execution_exception")


async def load(tmp_path: Path, rows: list[str], script: ScriptedBulk, **kw: Any) -> IngestResult:
    path = jsonl(tmp_path, rows)
    service = EmbeddingService(FakeEncoder(), BatchSettings(), ModelSettings(name="fake"))
    await service.start()
    es = script.client()
    try:
        target = resolve_index(IndexSettings(name="idx", dims=32), service.info.shape)
        options = IngestOptions(chunk_docs=10, max_backoff=0.01, **kw)
        return await Loader(es, service, target, options).run(path)
    finally:
        await es.close()
        await service.stop()


async def test_429s_are_retried_until_every_document_is_written(tmp_path: Path) -> None:
    rows = [json.dumps({"_id": str(i), "text": f"doc {i}"}) for i in range(6)]
    script = ScriptedBulk(
        lambda ids: Whole(429, "es_rejected_execution_exception"),  # the whole request
        lambda ids: [TOO_MANY if i % 2 else (201, None) for i in range(len(ids))],
    )
    result = await load(tmp_path, rows, script)
    calls = [len(ids) for ids in script.calls]
    assert calls == [6, 6, 3]  # whole request again, then only the refused half
    assert (result.indexed, result.embedded, result.failed) == (6, 6, 0)
    assert result.retries == 0  # the client's own 429 retries were enough


async def test_a_write_block_is_waited_out_and_a_final_refusal_reported(tmp_path: Path) -> None:
    rows = [json.dumps({"_id": str(i), "text": f"doc {i}"}) for i in range(4)]
    rows.append(json.dumps({"_id": "empty", "title": ""}))
    blocked = (403, "cluster_block_exception")
    script = ScriptedBulk(
        lambda ids: [blocked] * len(ids),
        lambda ids: [blocked, (201, None), (400, "document_parsing_exception"), blocked, blocked],
        lambda ids: [(503, "unavailable_shards_exception"), (201, None), (201, None)],
    )
    result = await load(tmp_path, rows, script)
    everything = ["0", "1", "2", "3", "empty"]
    assert script.calls == [everything, everything, ["0", "3", "empty"], ["0"]]
    assert (result.indexed, result.embedded, result.failed, result.retries) == (4, 3, 1, 3)
    assert result.first_error is not None
    assert result.first_error.startswith("document 2: 400 document_parsing_exception")


async def test_generated_ids_match_outcomes_to_documents(tmp_path: Path) -> None:
    rows = [json.dumps({"text": f"doc {i}"}) for i in range(3)] + [json.dumps({"title": ""})]
    script = ScriptedBulk(lambda ids: [TOO_MANY, (201, None), (201, None), (201, None)])
    result = await load(tmp_path, rows, script, id_field=None)
    first, again = script.calls
    assert len(set(first)) == 4 and all(len(i) == 20 for i in first)
    assert again == first[:1]  # the refused document is sent again under the same id
    assert (result.indexed, result.embedded, result.failed) == (4, 3, 0)


def test_progress_line_shows_counts_rate_and_eta() -> None:
    line = render("checked", 500, 2000, 10.0, embedded=400)
    assert line == "checked 500/2,000 (25%) embedded 400 50 docs/s ETA 0:30"
    assert "ETA" not in render("checked", 10, None, 1.0)
    out = io.StringIO()
    bar = ProgressLine("x", out)
    bar.finish(3, 3)
    assert out.getvalue().startswith("x 3/3 (100%)")


def test_client_settings_carry_auth_and_tls_but_never_print_secrets() -> None:
    s = ElasticsearchSettings(
        url="https://a:9200, https://b:9200", api_key="SECRET", ca_certs="/ca.pem",
        ssl_assert_fingerprint="AB:CD", request_timeout=7,
    )  # fmt: skip
    kw = client_kwargs(s)
    assert kw["hosts"] == ["https://a:9200", "https://b:9200"]
    assert kw["api_key"] == "SECRET" and kw["ca_certs"] == "/ca.pem"
    assert kw["ssl_assert_fingerprint"] == "AB:CD" and kw["request_timeout"] == 7
    assert "SECRET" not in describe_client(s)
    basic = ElasticsearchSettings(username="u", password="PW")
    assert client_kwargs(basic)["basic_auth"] == ("u", "PW")
    assert "PW" not in describe_client(basic)
    with pytest.raises(ConfigError, match="either api_key or username"):
        client_kwargs(ElasticsearchSettings(api_key="k", username="u", password="p"))
    with pytest.raises(ConfigError, match="both username and password"):
        client_kwargs(ElasticsearchSettings(username="u"))


def test_backoff_doubles_up_to_the_maximum_and_resets() -> None:
    b = Backoff(0.5, 3.0)
    delays = [b.next() for _ in range(5)]
    for delay, nominal in zip(delays, [0.5, 1, 2, 3, 3], strict=True):
        assert nominal * 0.9 <= delay <= nominal * 1.1  # jitter of +-10 %
    b.reset()
    assert b.next() <= 0.55
