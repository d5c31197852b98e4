"""Bulk writes: ``elasticsearch.helpers.async_streaming_bulk`` with per-item outcomes.

The helper chunks by count and bytes and waits out 429s itself (exponential backoff);
every item then comes back with its outcome and the refusal table's verdict, and the
caller applies the policy: written, retry later, dropped as a conflict, or given up.

The helper answers retried items after the others, so outcomes are matched to actions by
``_id``: every action must carry one (the loader names its documents for that reason,
which also makes a resend after a lost answer overwrite instead of duplicate).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_streaming_bulk

from es_embed.elastic.refusals import Refusal, classify_item

Action = tuple[dict[str, Any], dict[str, Any]]  # the action line ({"update": {...}}), its body


@dataclass(frozen=True)
class BulkRetry:
    """How long the client waits out 429s on a bulk item before reporting it retryable."""

    max_retries: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 5.0


@dataclass(frozen=True)
class Outcome:
    status: int
    refusal: Refusal | None  # None: written

    @property
    def ok(self) -> bool:
        return self.refusal is None


def _action_id(action: Action) -> str:
    (meta,) = action[0].values()
    doc_id = meta.get("_id")
    if doc_id is None:
        raise ValueError(f"bulk action without an _id: {action[0]}")
    return str(doc_id)


async def bulk_write(
    es: AsyncElasticsearch,
    actions: Sequence[Action],
    retry: BulkRetry | None = None,
    *,
    max_chunk_bytes: int = 100 * 1024 * 1024,
) -> list[Outcome]:
    """Write ``actions``; ``result[i]`` is the outcome of ``actions[i]``.

    A refused request is reported per item (``raise_on_exception=False``); only "no answer
    at all" (connection error, timeout) raises, as the elasticsearch ``TransportError``.
    """
    retry = retry or BulkRetry()
    pending: defaultdict[str, deque[int]] = defaultdict(deque)
    for i, action in enumerate(actions):
        pending[_action_id(action)].append(i)
    outcomes: list[Outcome | None] = [None] * len(actions)
    stream = async_streaming_bulk(
        es,
        [{"action": action, "body": body} for action, body in actions],
        chunk_size=max(1, len(actions)),  # the callers size their requests
        max_chunk_bytes=max_chunk_bytes,
        expand_action_callback=_expand,
        raise_on_error=False,
        raise_on_exception=False,
        max_retries=retry.max_retries,
        initial_backoff=retry.initial_backoff,
        max_backoff=retry.max_backoff,
    )
    async for _, result in stream:
        ((_, item),) = result.items()
        waiting = pending.get(str(item.get("_id")))
        if not waiting:
            raise RuntimeError(f"bulk answer for a document not sent: {item.get('_id')!r}")
        outcomes[waiting.popleft()] = _outcome(item)
    done = [o for o in outcomes if o is not None]
    if len(done) != len(actions):  # never seen; a silent gap would drop documents
        raise RuntimeError(f"bulk answer lacks {len(actions) - len(done)} of the actions")
    return done


def _expand(item: bytes | str | dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    # Our lines as they are: the helper's own expansion would take a document field named
    # "routing" or "version" for bulk metadata.
    pair = cast(dict[str, dict[str, Any]], item)
    return pair["action"], pair["body"]


def _outcome(item: Mapping[str, Any]) -> Outcome:
    return Outcome(int(item.get("status", 500)), classify_item(item))
