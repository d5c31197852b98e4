"""The pure parts of failed documents (issue 14): the reason a text cannot be hashed, the
record and its id, and ``es-embed status`` output."""

from __future__ import annotations

import pytest

from es_embed.cli import build_parser
from es_embed.cli.status import ShardRow, render, report
from es_embed.follow.state import (
    FAILED,
    FailedDocument,
    failure_id,
    failure_source,
    failures_query,
)
from es_embed.indices.document import content_hash, unencodable_reason

FIELDS = ("title", "text", "meta.summary")


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (
            {"title": "lone \ud800 surrogate", "text": "abc"},
            "title contains a lone surrogate (\\ud800 at character 5), "
            "which is not valid Unicode text",
        ),
        (
            {"title": "fine", "text": ["ok", "x\udfffy"]},
            "text contains a lone surrogate (\\udfff at character 1), "
            "which is not valid Unicode text",
        ),
        (
            {"meta": {"summary": "\ud83d"}},
            "meta.summary contains a lone surrogate (\\ud83d at character 0), "
            "which is not valid Unicode text",
        ),
    ],
)
def test_the_reason_names_the_field_and_the_character(source: dict, reason: str) -> None:
    assert unencodable_reason(source, FIELDS) == reason


def test_the_hash_refuses_a_lone_surrogate_and_takes_a_valid_pair() -> None:
    with pytest.raises(UnicodeEncodeError):
        content_hash("m", 32, "lone \ud800")
    assert len(content_hash("m", 32, "pair \U0001f600")) == 64


def test_failure_ids_are_short_stable_and_distinct() -> None:
    long_id = "x" * 512  # the most an _id may hold
    fid = failure_id("uuid-1", 0, long_id)
    assert fid == failure_id("uuid-1", 0, long_id)
    assert fid.startswith("failed:uuid-1:0:") and len(fid.encode()) < 100
    others = {failure_id("uuid-1", 1, long_id), failure_id("uuid-2", 0, long_id),
              failure_id("uuid-1", 0, long_id[:-1])}  # fmt: skip
    assert fid not in others and len(others) == 3


def test_a_record_reads_back_as_written() -> None:
    hit = {"_index": "docs-1", "_id": "a", "_seq_no": 7, "_routing": "r1"}
    src = failure_source("docs", "u", 2, hit, "why")
    assert src["kind"] == FAILED and src["failed_at"].endswith("+00:00")
    doc = FailedDocument.from_source(src)
    assert (doc.name, doc.index, doc.uuid, doc.shard) == ("docs", "docs-1", "u", 2)
    assert (doc.doc_id, doc.routing, doc.seq_no, doc.reason) == ("a", "r1", 7, "why")
    assert (
        FailedDocument.from_source(
            failure_source("d", "u", 0, {**hit, "_routing": None}, "")
        ).routing
        is None
    )


def test_failures_query_filters_on_kind_and_the_given_terms() -> None:
    assert failures_query(name=["a", "b"], shard=0) == {
        "bool": {
            "filter": [
                {"term": {"kind": "failed"}},
                {"terms": {"name": ["a", "b"]}},
                {"term": {"shard": 0}},
            ]
        }
    }


ROWS = [
    ShardRow("docs", "docs", 0, 41, 44, "host-a:17", 3.25),
    ShardRow("logs", "logs-000002", 1, -1, 9),
    ShardRow("later", "", 0, -1, -1),
]
FAILED_DOCS = [
    FailedDocument("docs", "docs", "u", 0, "poison", None, 12, "title contains\na surrogate",
                   "2025-01-02T03:04:05.678+00:00"),
    FailedDocument("logs", "logs-000002", "v", 1, "l-9", "r", 3, "the model refused it",
                   "2025-01-02T03:04:06.000+00:00"),
]  # fmt: skip


def test_status_table() -> None:
    assert render(ROWS, FAILED_DOCS) == [
        "INDEX               SHARD  CHECKPOINT  LAG  OWNER      LEASE AGE",
        "docs                0      41          3    host-a:17  3.2s",
        "logs (logs-000002)  1      -1          10   -          -",
        "later: no such index, alias or data stream (yet)",
        "",
        "2 failed documents:",
        "INDEX               ID      TIME                           REASON",
        "docs                poison  2025-01-02T03:04:05.678+00:00  title contains a surrogate",
        "logs (logs-000002)  l-9     2025-01-02T03:04:06.000+00:00  the model refused it",
    ]
    assert render(ROWS[:1], [])[-2:] == ["", "no failed documents"]
    assert render(ROWS[2:], []) == [
        "later: no such index, alias or data stream (yet)",
        "",
        "no failed documents",
    ]


def test_status_json() -> None:
    got = report(ROWS, FAILED_DOCS[:1])
    assert got["shards"][1] == {"name": "logs", "index": "logs-000002", "shard": 1,
                                "checkpoint": -1, "global_checkpoint": 9, "lag": 10,
                                "owner": None, "lease_age": None}  # fmt: skip
    assert (got["shards"][0]["owner"], got["shards"][0]["lease_age"]) == ("host-a:17", 3.25)
    assert got["missing"] == ["later"]
    assert got["failed"] == [
        {
            "name": "docs",
            "index": "docs",
            "uuid": "u",
            "shard": 0,
            "doc_id": "poison",
            "routing": None,
            "seq_no": 12,
            "reason": "title contains\na surrogate",
            "failed_at": "2025-01-02T03:04:05.678+00:00",
        }
    ]


def test_status_is_a_command_and_backfill_takes_retry_failed() -> None:
    parser = build_parser()
    args = parser.parse_args(["status", "--config", "c.yaml", "--json", "--index", "docs"])
    assert (args.command, args.json, args.index) == ("status", True, ["docs"])
    assert parser.parse_args(["backfill", "--retry-failed"]).retry_failed is True
    assert parser.parse_args(["backfill"]).retry_failed is False
