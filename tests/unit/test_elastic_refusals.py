"""The refusal table: every row, read from a bulk item and from an ApiError, never from text."""

from __future__ import annotations

from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders
from elasticsearch import ApiError, ConnectionError, ConnectionTimeout, SerializationError

from es_embed.elastic.refusals import (
    BY_TYPE,
    RetryLater,
    Verdict,
    classify,
    classify_error,
    classify_item,
    error_type,
)
from es_embed.elastic.retry import is_transient
from es_embed.errors import EmbedError, ErrorKind
from es_embed.follow.state import _create as create_state_index

R, C, F = Verdict.RETRYABLE, Verdict.CONFLICT, Verdict.FINAL

# (error type, the status Elasticsearch gives it, verdict, transient): written out by hand,
# so a changed row in the table fails here.
ROWS: list[tuple[str, int, Verdict, bool]] = [
    ("es_rejected_execution_exception", 429, R, True),
    ("circuit_breaking_exception", 429, R, True),
    ("cluster_block_exception", 403, R, True),  # index.blocks.write
    ("cluster_block_exception", 429, R, True),  # flood-stage disk watermark
    ("index_closed_exception", 400, R, True),
    ("unavailable_shards_exception", 503, R, True),
    ("no_shard_available_action_exception", 503, R, True),
    ("primary_missing_action_exception", 503, R, True),
    ("shard_not_in_primary_mode_exception", 500, R, True),
    ("illegal_index_shard_state_exception", 500, R, True),
    ("retry_on_primary_exception", 503, R, True),
    ("node_not_connected_exception", 500, R, True),
    ("node_disconnected_exception", 500, R, True),
    ("node_closed_exception", 500, R, True),
    ("connect_transport_exception", 500, R, True),
    ("master_not_discovered_exception", 503, R, True),
    ("not_master_exception", 503, R, True),
    ("receive_timeout_transport_exception", 500, R, True),
    ("process_cluster_event_timeout_exception", 503, R, True),
    ("elasticsearch_timeout_exception", 500, R, True),
    ("security_exception", 403, R, False),  # holds, logged as an error
    ("version_conflict_engine_exception", 409, C, False),
    ("document_missing_exception", 404, C, False),
    ("index_not_found_exception", 404, C, False),
    ("mapper_parsing_exception", 400, F, False),
    ("document_parsing_exception", 400, F, False),
    ("strict_dynamic_mapping_exception", 400, F, False),
    ("illegal_argument_exception", 400, F, False),
    ("x_content_parse_exception", 400, F, False),
    ("parsing_exception", 400, F, False),
    ("action_request_validation_exception", 400, F, False),
    # a type the table does not name: the status decides
    ("some_new_exception", 429, R, True),
    ("some_new_exception", 408, R, True),
    ("some_new_exception", 500, R, True),
    ("some_new_exception", 503, R, True),
    ("some_new_exception", 401, R, False),
    ("some_new_exception", 403, R, False),
    ("some_new_exception", 404, C, False),
    ("some_new_exception", 409, C, False),
    ("some_new_exception", 400, F, False),
    ("some_new_exception", 413, F, False),
    ("", 502, R, True),  # a proxy's error page: no type at all
]


def api_error(status: int, body: Any) -> ApiError:
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.0, None)  # type: ignore[arg-type]
    error = body["error"]["type"] if isinstance(body, dict) else str(body)
    return ApiError(error, meta, body)


def es_body(kind: str, status: int, reason: str = "why") -> dict[str, Any]:
    error = {"type": kind, "reason": reason}
    return {"error": {**error, "root_cause": [error]}, "status": status}


def test_every_type_in_the_table_has_a_row_here() -> None:
    assert set(BY_TYPE) <= {kind for kind, *_ in ROWS}


@pytest.mark.parametrize(("kind", "status", "verdict", "transient"), ROWS)
def test_a_bulk_item_is_classified_by_status_and_type(
    kind: str, status: int, verdict: Verdict, transient: bool
) -> None:
    item = {"_index": "i", "_id": "1", "status": status, "error": {"type": kind, "reason": "r"}}
    refusal = classify_item(item)
    assert refusal is not None
    assert (refusal.verdict, refusal.transient) == (verdict, transient)
    assert (refusal.status, refusal.type, refusal.reason) == (status, kind, "r")


@pytest.mark.parametrize(("kind", "status", "verdict", "transient"), ROWS)
def test_an_api_error_is_classified_by_its_fields(
    kind: str, status: int, verdict: Verdict, transient: bool
) -> None:
    exc = api_error(status, es_body(kind, status) if kind else "<html>bad gateway</html>")
    refusal = classify_error(exc)
    assert (refusal.verdict, refusal.transient, refusal.type) == (verdict, transient, kind)
    assert is_transient(exc) is (verdict is R and transient)


def test_the_message_text_is_never_read() -> None:
    # A final type whose reason talks of blocks and timeouts stays final, and the other way.
    mapping = {"type": "mapper_parsing_exception", "reason": "cluster_block_exception timeout"}
    item = {"status": 400, "error": mapping}
    assert classify_item(item).verdict is F  # type: ignore[union-attr]
    block = {"type": "cluster_block_exception", "reason": "mapper_parsing_exception"}
    assert classify_item({"status": 403, "error": block}).verdict is R  # type: ignore[union-attr]


def test_a_written_item_is_no_refusal() -> None:
    assert classify_item({"_id": "1", "status": 201}) is None
    assert classify_item({"_id": "1", "status": 200}) is None


def test_a_whole_request_refusal_is_read_from_the_exception_not_the_message() -> None:
    # What elasticsearch.helpers reports per item when the whole request failed.
    exc = api_error(403, es_body("cluster_block_exception", 403))
    item = {"status": 403, "error": "ApiError(400, 'mapper_parsing_exception')", "exception": exc}
    refusal = classify_item(item)
    assert refusal is not None
    assert (refusal.verdict, refusal.type, refusal.status) == (R, "cluster_block_exception", 403)


def test_no_answer_is_retryable_and_a_serialization_error_is_final() -> None:
    for exc in (ConnectionError("refused"), ConnectionTimeout("slow"), TimeoutError()):
        refusal = classify_error(exc)
        assert (refusal.verdict, refusal.transient, refusal.status) == (R, True, 0)
        assert is_transient(exc)
    assert classify_error(SerializationError("bad json")).verdict is F
    assert not is_transient(SerializationError("bad json"))
    assert classify_error(ValueError("bug")).verdict is F


def test_retry_later_and_embedding_errors_say_whether_waiting_helps() -> None:
    block = classify(403, "cluster_block_exception", "index [i] blocked")
    assert is_transient(RetryLater("i", block, 3))
    assert "3 writes" in str(RetryLater("i", block, 3)) and "cluster_block_exception" in str(block)
    assert not is_transient(RetryLater("i", classify(403, "security_exception"), 1))
    assert is_transient(EmbedError(ErrorKind.UNAVAILABLE, "model down"))
    assert is_transient(EmbedError(ErrorKind.OVERLOADED, "full"))
    assert not is_transient(EmbedError(ErrorKind.INVALID_REQUEST, "too long"))


def test_error_type_reads_the_body_and_is_empty_without_one() -> None:
    exists = api_error(400, es_body("resource_already_exists_exception", 400))
    assert error_type(exists) == "resource_already_exists_exception" == exists.error
    assert error_type(api_error(502, "<html>bad gateway</html>")) == ""
    assert str(classify(503, "", "")) == "503"
    assert str(classify(403, "cluster_block_exception", "blocked")) == (
        "403 cluster_block_exception: blocked"
    )


class RacingIndices:
    """``indices`` of a client that loses the race to create an index (or fails otherwise)."""

    def __init__(self, error: ApiError) -> None:
        self.error = error
        self.created = 0

    async def exists(self, index: str) -> bool:
        return False

    async def create(self, index: str, **body: Any) -> None:
        self.created += 1
        raise self.error


async def test_losing_the_race_to_create_the_state_index_is_read_from_the_error_type() -> None:
    lost = RacingIndices(api_error(400, es_body("resource_already_exists_exception", 400)))
    es: Any = type("Client", (), {"indices": lost})()
    # state._create is the one place ensure_state_index creates the index.
    assert await create_state_index(es, "state") is False and lost.created == 1
    # The same words in another error's message are not the same refusal.
    other = api_error(400, es_body("illegal_argument_exception", 400,
                                   reason="not a resource_already_exists_exception"))  # fmt: skip
    es.indices = RacingIndices(other)
    with pytest.raises(ApiError):
        await create_state_index(es, "state")
