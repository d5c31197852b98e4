"""What a refusal from Elasticsearch means for a write: one table, read from the error's
``type`` and HTTP ``status`` (a bulk item's ``status`` and ``error.type``, or an
``ApiError``'s ``status``/``error``/``body``), never from message text.

- **retryable**: the same request can pass later (a write block, a full queue, a shard
  moving, a node away, a timeout). Hold the checkpoint, back off, send it again.
- **conflict**: the document changed (409) or went away (404) after it was read; its newer
  version is already in the feed, so our write is dropped.
- **final**: sending the same request again can never pass (the document does not fit the
  mapping, the request is malformed). Report it and move on.

``transient`` separates the retryable refusals that pass by themselves from those that
wait for a person (missing privileges): both hold, the second are logged as errors.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from elasticsearch import ApiError, SerializationError, TransportError


class Verdict(enum.Enum):
    RETRYABLE = "retryable"
    CONFLICT = "conflict"
    FINAL = "final"


@dataclass(frozen=True)
class Rule:
    verdict: Verdict
    transient: bool = True  # False: holds until someone acts (logged as an error)


RETRY = Rule(Verdict.RETRYABLE)
RETRY_NEEDS_PERSON = Rule(Verdict.RETRYABLE, transient=False)
CONFLICT = Rule(Verdict.CONFLICT, transient=False)
FINAL = Rule(Verdict.FINAL, transient=False)

# Elasticsearch's error type -> rule. A type names the cause precisely, so it wins over
# the status (a write block is a 403, a flood-stage disk block a 429).
BY_TYPE: dict[str, Rule] = {
    # pressure: the node asks us to slow down
    "es_rejected_execution_exception": RETRY,
    "circuit_breaking_exception": RETRY,
    # blocks: index.blocks.write, read_only_allow_delete at the flood-stage watermark
    "cluster_block_exception": RETRY,
    "index_closed_exception": RETRY,  # closed for maintenance; reopened, it takes writes
    # shards relocating, starting or unassigned; nodes leaving or joining
    "unavailable_shards_exception": RETRY,
    "no_shard_available_action_exception": RETRY,
    "primary_missing_action_exception": RETRY,
    "shard_not_in_primary_mode_exception": RETRY,
    "illegal_index_shard_state_exception": RETRY,
    "retry_on_primary_exception": RETRY,
    "node_not_connected_exception": RETRY,
    "node_disconnected_exception": RETRY,
    "node_closed_exception": RETRY,
    "connect_transport_exception": RETRY,
    "master_not_discovered_exception": RETRY,
    "not_master_exception": RETRY,
    # timeouts inside the cluster
    "receive_timeout_transport_exception": RETRY,
    "process_cluster_event_timeout_exception": RETRY,
    "elasticsearch_timeout_exception": RETRY,
    # privileges can be granted while we wait; nothing about the document is wrong
    "security_exception": RETRY_NEEDS_PERSON,
    # the document moved on: its newer version is in the feed
    "version_conflict_engine_exception": CONFLICT,
    "document_missing_exception": CONFLICT,
    "index_not_found_exception": CONFLICT,
    # the document or request cannot be taken as it is
    "mapper_parsing_exception": FINAL,
    "document_parsing_exception": FINAL,
    "strict_dynamic_mapping_exception": FINAL,
    "illegal_argument_exception": FINAL,
    "x_content_parse_exception": FINAL,
    "parsing_exception": FINAL,
    "action_request_validation_exception": FINAL,
}


def rule_for_status(status: int) -> Rule:
    """The rule for an error type the table does not name."""
    if status == 429 or status == 408 or status >= 500:
        return RETRY
    if status in (401, 403):
        return RETRY_NEEDS_PERSON
    if status in (404, 409):
        return CONFLICT
    return FINAL


@dataclass(frozen=True)
class Refusal:
    verdict: Verdict
    transient: bool  # a retryable refusal expected to pass without anyone acting
    status: int  # HTTP status; 0 when nothing answered (connection error, timeout)
    type: str  # Elasticsearch's error type; for no answer, the exception's class name
    reason: str  # for logs and reports

    def __str__(self) -> str:
        label = " ".join(p for p in (str(self.status) if self.status else "", self.type) if p)
        return f"{label}: {self.reason}" if self.reason else label


def classify(status: int, error_type: str, reason: str = "") -> Refusal:
    rule = BY_TYPE.get(error_type) or rule_for_status(status)
    return Refusal(rule.verdict, rule.transient, status, error_type, reason)


ALREADY_EXISTS = "resource_already_exists_exception"  # creating an index another caller made


def error_type(exc: ApiError) -> str:
    """Elasticsearch's error type (which the client also copies into ``ApiError.error``);
    "" when the answer carries none, e.g. a proxy's error page."""
    body = exc.body
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return str(body["error"].get("type") or "")
    return ""


def _reason(error: Any) -> str:
    if isinstance(error, Mapping):
        return str(error.get("reason") or "")
    return ""


def classify_error(exc: BaseException) -> Refusal:
    """A failed call: an answer with an error, or no answer at all."""
    if isinstance(exc, ApiError):
        body = exc.body if isinstance(exc.body, Mapping) else {}
        return classify(exc.meta.status, error_type(exc), _reason(body.get("error")))
    name = type(exc).__name__
    if isinstance(exc, SerializationError):  # our request or its answer is malformed
        return Refusal(Verdict.FINAL, False, 0, name, str(exc))
    if isinstance(exc, TransportError | OSError | TimeoutError):
        return Refusal(Verdict.RETRYABLE, True, 0, name, str(exc))
    return Refusal(Verdict.FINAL, False, 0, name, str(exc))


def classify_item(item: Mapping[str, Any]) -> Refusal | None:
    """One bulk item as ``elasticsearch.helpers`` reports it; None when it was written.

    When the whole request failed, the helper reports every item with the request's
    status, the message as ``error`` and the ``ApiError`` as ``exception``: the table
    reads the exception's fields then.
    """
    status = int(item.get("status", 500))
    if 200 <= status < 300:
        return None
    exc = item.get("exception")
    if isinstance(exc, ApiError):
        return classify_error(exc)
    error = item.get("error")
    kind = str(error.get("type", "")) if isinstance(error, Mapping) else ""
    return classify(status, kind, _reason(error))


class RetryLater(Exception):
    """Some writes were refused for now; raised so the caller backs off and tries again
    without moving past them (the follower retries the page; the checkpoint holds)."""

    def __init__(self, what: str, refusal: Refusal, count: int) -> None:
        super().__init__(f"{what}: Elasticsearch refused {count} writes for now ({refusal})")
        self.refusal = refusal
        self.count = count
