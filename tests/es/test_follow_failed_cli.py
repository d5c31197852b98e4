"""The failed documents through the commands (issue 14): ``backfill`` finishes past them with
exit 1 and a line naming how many, ``status`` lists them (table and --json), and
``backfill --retry-failed`` takes them again: those that pass now lose their record, the
others keep it with the new reason. In-process, with the fake encoder as the model."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from elasticsearch import AsyncElasticsearch, Elasticsearch

from es_embed.cli import backfill, status
from es_embed.config import Settings, settings_from_dict
from es_embed.embed.service import embedding_service
from es_embed.provision.setup import Setup
from tests.es.follow_support import POISON
from tests.fakes import ANY_SHAPE, FakeEncoder
from tests.faults.support import Expect

pytestmark = pytest.mark.es

EXPECT = Expect(model="fake-encoder", dims=32)
LONG_TEXT = " ".join(f"word{i}" for i in range(40))  # 41 tokens with the end-of-text one


@dataclass
class Case:
    es: Elasticsearch
    index: str
    state: str
    config: Path
    raw: dict[str, Any]
    max_length: int = 16  # of the fake model the commands load

    def write_config(self, **model: Any) -> None:
        self.raw["model"].update(model)
        self.config.write_text(yaml.safe_dump(self.raw))

    def failures(self) -> dict[str, dict[str, Any]]:
        self.es.indices.refresh(index=self.state)
        resp = self.es.search(index=self.state, query={"term": {"kind": "failed"}}, size=100)
        return {h["_source"]["doc_id"]: h["_source"] for h in resp["hits"]["hits"]}

    def stale(self) -> list[str]:
        self.es.indices.refresh(index=self.index)
        resp = self.es.search(index=self.index, size=100, source={"exclude_vectors": False})
        return sorted(h["_id"] for h in resp["hits"]["hits"] if not EXPECT.is_current(h["_source"]))

    def seq_no(self, doc_id: str) -> int:
        return int(self.es.get(index=self.index, id=doc_id)["_seq_no"])

    def global_checkpoint(self) -> int:
        stats = self.es.indices.stats(index=self.index, level="shards", metric="docs")
        copies = stats["indices"][self.index]["shards"]["0"]
        return int(
            next(c["seq_no"]["global_checkpoint"] for c in copies if c["routing"]["primary"])
        )


async def _setup(es_url: str, settings: Settings) -> None:
    async with AsyncElasticsearch(es_url) as es:
        await Setup(es, settings, ANY_SHAPE).run()


@pytest.fixture
def case(
    tmp_path: Path, es_url: str, es: Elasticsearch, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Case]:
    index, state = f"failcli-{uuid.uuid4().hex[:8]}", f"failcli-state-{uuid.uuid4().hex[:8]}"
    raw = {
        "elasticsearch": {"url": es_url},
        "model": {"name": "fake", "truncation": "error"},
        "follow": {"state_index": state, "page_size": 4, "poll_interval": 0.1},
        "indices": [{"name": index, "dims": 32}],
    }
    c = Case(es, index, state, tmp_path / "es-embed.yaml", raw)
    c.write_config()
    asyncio.run(_setup(es_url, settings_from_dict(raw)))

    def fake_model(settings: Settings) -> Any:  # the configured model, played by the fake
        return embedding_service(settings, FakeEncoder(max_length=c.max_length))

    monkeypatch.setattr(backfill, "embedding_service", fake_model)
    yield c
    es.options(ignore_status=404).indices.delete(index=f"{index},{state}")
    es.options(ignore_status=404).indices.delete_index_template(name=f"es-embed-{index}*")
    es.options(ignore_status=404).cluster.delete_component_template(name=f"es-embed-{index}*")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="es-embed")
    sub = parser.add_subparsers()
    for module in (backfill, status):
        module.register(sub)
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def write_documents(c: Case) -> None:
    """good-0..9, the poison document, a document too long for the model, good-10..19."""
    ops: list[dict[str, Any]] = []
    for i in range(10):
        ops += [{"index": {"_index": c.index, "_id": f"good-{i}"}}, {"text": f"plain {i}"}]
    c.es.bulk(operations=ops)
    c.es.perform_request(
        "PUT",
        f"/{c.index}/_doc/poison",
        headers={"content-type": "application/json", "accept": "application/json"},
        body=POISON,
    )
    c.es.index(index=c.index, id="long", document={"text": LONG_TEXT})
    ops = []
    for i in range(10, 20):
        ops += [{"index": {"_index": c.index, "_id": f"good-{i}"}}, {"text": f"plain {i}"}]
    c.es.bulk(operations=ops, refresh=True)


FAILED_LINE = (
    "error: 2 documents were skipped and listed as failed; `es-embed status` shows why, "
    "`es-embed backfill --retry-failed` tries again"
)
POISON_REASON = (
    "title contains a lone surrogate (\\ud800 at character 5), which is not valid Unicode text"
)


def test_backfill_finishes_past_failed_documents_and_status_lists_them(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    write_documents(case)
    last_good = case.seq_no("good-19")
    code, _, err = run(["backfill", "--config", str(case.config)], capsys)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == FAILED_LINE
    assert case.stale() == ["long", "poison"]
    listed = case.failures()
    assert listed["poison"]["reason"] == POISON_REASON
    assert listed["poison"]["seq_no"] == case.seq_no("poison")
    assert listed["long"]["reason"].startswith("the model refused its text: input[0] has 41 tokens")

    code, out, err = run(["status", "--config", str(case.config)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["INDEX", "SHARD", "CHECKPOINT", "LAG", "OWNER", "LEASE", "AGE"]
    checkpoint, lag = (int(v) for v in lines[1].split()[2:4])
    assert lines[1].split()[4:] == ["-", "-"]  # backfill takes no lease
    assert lines[1].split()[:2] == [case.index, "0"]
    assert checkpoint >= last_good  # past both failed documents
    assert lag == case.global_checkpoint() - checkpoint  # our own write-backs since
    assert lines[3] == "2 failed documents:"
    assert lines[4].split() == ["INDEX", "ID", "TIME", "REASON"]
    rows = {line.split()[1]: line for line in lines[5:]}
    assert set(rows) == {"poison", "long"}
    assert rows["poison"].endswith(POISON_REASON)
    assert listed["poison"]["failed_at"] in rows["poison"]

    code, out, _ = run(["status", "--config", str(case.config), "--json"], capsys)
    assert code == 0
    got = json.loads(out)
    (shard,) = got["shards"]
    assert (shard["name"], shard["index"], shard["shard"]) == (case.index, case.index, 0)
    assert shard["checkpoint"] == checkpoint
    assert shard["lag"] == shard["global_checkpoint"] - checkpoint
    assert got["missing"] == []
    by_id = {f["doc_id"]: f for f in got["failed"]}
    assert by_id["poison"]["reason"] == POISON_REASON
    assert by_id["poison"]["seq_no"] == case.seq_no("poison")
    assert by_id["long"]["index"] == case.index


def test_retry_failed_keeps_what_still_fails_with_its_new_reason_and_clears_the_rest(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    write_documents(case)
    assert run(["backfill", "--config", str(case.config)], capsys)[0] == 1
    before = case.failures()

    case.max_length = 20  # a model with another limit: the refusal reads differently
    code, _, err = run(["backfill", "--config", str(case.config), "--retry-failed"], capsys)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == FAILED_LINE
    after = case.failures()
    assert after["poison"] == before["poison"]  # same version, same reason: untouched
    assert "more than the limit of 20" in after["long"]["reason"]
    assert after["long"]["failed_at"] >= before["long"]["failed_at"]

    # Fixed: the poison document rewritten, the model told to truncate.
    case.es.index(index=case.index, id="poison", document={"title": "valid now"}, refresh=True)
    case.write_config(truncation="truncate")
    code, _, err = run(["backfill", "--config", str(case.config), "--retry-failed"], capsys)
    assert code == 0, err
    assert case.failures() == {}
    assert case.stale() == []

    code, out, _ = run(["status", "--config", str(case.config)], capsys)
    assert code == 0
    assert out.splitlines()[-1] == "no failed documents"


def test_retry_failed_drops_the_record_of_a_deleted_document(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    write_documents(case)
    assert run(["backfill", "--config", str(case.config)], capsys)[0] == 1
    case.es.delete(index=case.index, id="poison", refresh=True)
    code, _, err = run(["backfill", "--config", str(case.config), "--retry-failed"], capsys)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == FAILED_LINE.replace("2 documents were", "1 document was")
    assert set(case.failures()) == {"long"}
