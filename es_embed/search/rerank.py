"""The sidecar's last stage of a search: rerank the top of the ranked list.

The reranker comes in as a callable (``RerankStage``), as the query embedder does, so
search never imports the model. Each hit's text is what the follower embeds, read from
``_source``: on a one-vector index the index's text fields joined by newlines
(``document_text``); on a passages index the hit's best passage as it was embedded (the
title, a newline, the passage: ``passage_text``), so a fact deep in a long document is read
where it is, not cut off with the document's tail. The best passage is the kNN leg's first
inner hit; a hit without one (found by BM25 alone, or asked for with ``passages: 0``) gets
the passage the kNN leg would have picked, from one more nested kNN search restricted to
those hits (``best_passage_body``); a document with no passages yet (not embedded) is read
whole, as on a one-vector index.

Order: the first ``window`` hits by the reranker's score, best first (ties keep the ranked
list's order), then every later hit in its own order. ``_score`` stays the first stage's
(fused or Elasticsearch's); ``legs.rerank`` carries the reranker's rank and score.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from es_embed.indices.document import FIELD_JOINER, doc_text, document_text
from es_embed.search.builders import Body, Plan, ids_query, knn_section
from es_embed.search.fusion import Hit, Key, LegScore
from es_embed.search.passages import PassageHit, PassageRead, from_inner_hits

Scores = Sequence[float] | np.ndarray
# (query, documents) -> one relevance score per document, higher is better
# (e.g. EmbeddingService.rerank's scores)
DocumentScorer = Callable[[str, Sequence[str]], Awaitable[Scores]]


@dataclass(frozen=True)
class RerankStage:
    model: str  # the reranker's served id, for --dev-console
    score: DocumentScorer


def texts(
    hits: Sequence[Hit], text_fields: Sequence[str], sources: Mapping[Key, Any] | None = None
) -> list[str]:
    """Each hit's document text, from ``sources`` (read apart) or else its own ``_source``."""
    out = []
    for hit in hits:
        source = hit.source if sources is None else sources.get((hit.index, hit.id))
        out.append(document_text(source, text_fields) if isinstance(source, Mapping) else "")
    return out


def reorder(hits: Sequence[Hit], scores: Scores) -> list[Hit]:
    """The first ``len(scores)`` hits by score (best first, ties in their order), the rest after."""
    n = len(scores)
    if n > len(hits):
        raise ValueError(f"{n} scores for {len(hits)} hits")
    order = sorted(range(n), key=lambda i: -float(scores[i]))  # stable: ties keep their order
    top = [
        dataclasses.replace(
            hits[i], legs={**hits[i].legs, "rerank": LegScore(rank, float(scores[i]))}
        )
        for rank, i in enumerate(order, start=1)
    ]
    return top + list(hits[n:])


def passage_text(source: Any, text_fields: Sequence[str], passage: PassageHit | None) -> str:
    """What the reranker reads of a passages-index hit: ``passage`` as it was embedded (the
    title, a newline, the passage; the first passage is the document's start), or the whole
    text when there is none (a document not embedded yet)."""
    if not isinstance(source, Mapping):
        return ""
    doc = doc_text(source, text_fields)
    if passage is None or passage.end > len(doc.text):
        return doc.text
    body = doc.text[passage.start : passage.end]
    if doc.body_start and passage.start >= doc.body_start:
        return doc.text[: doc.body_start - len(FIELD_JOINER)] + FIELD_JOINER + body
    return body


def passage_texts(
    hits: Sequence[Hit],
    text_fields: Sequence[str],
    sources: Mapping[Key, Any] | None,
    found: Mapping[Key, tuple[PassageHit | None, Any]],
) -> list[str]:
    """Each hit's best passage: its own first inner hit, else the one ``found`` for it by
    ``best_passage_body`` (with the source that search returned), else its whole text."""
    out = []
    for hit in hits:
        source = hit.source if sources is None else sources.get((hit.index, hit.id))
        if hit.passages:
            out.append(passage_text(source, text_fields, hit.passages[0]))
        else:  # not found: no passages yet, so the whole text, from the hit's own source
            passage, source = found.get((hit.index, hit.id), (None, source))
            out.append(passage_text(source, text_fields, passage))
    return out


def best_passage_body(
    keys: Sequence[Key], field: str, vector: Sequence[float], text_fields: Sequence[str]
) -> Body:
    """The best passage of each of these documents for the query vector, as the kNN leg
    picks it: the nested kNN, filtered to exactly these documents (``k`` = their count, so
    every one that has passages comes back), one inner hit each, and their text fields."""
    inner = {"size": 1, "_source": False, "docvalue_fields": [f"{field}.start", f"{field}.end"]}
    section = knn_section(vector, f"{field}.vector", len(keys), [ids_query(keys)],
                          inner_hits=inner)  # fmt: skip
    return {"knn": section, "size": len(keys), "_source": list(text_fields)}


def best_passages(
    raw_hits: Sequence[Mapping[str, Any]], field: str, text_fields: Sequence[str]
) -> dict[Key, tuple[PassageHit | None, Any]]:
    """``best_passage_body``'s answer: each document's best passage and its ``_source``."""
    read = PassageRead(field, tuple(text_fields))
    out: dict[Key, tuple[PassageHit | None, Any]] = {}
    for h in raw_hits:
        passages = from_inner_hits(h, read)
        out[(h["_index"], h["_id"])] = (passages[0] if passages else None, h.get("_source"))
    return out


def plan_vector(p: Plan) -> list[float] | None:
    """The query vector the plan's requests carry (None for bm25 alone)."""

    def find(node: Any) -> list[float] | None:
        if isinstance(node, Mapping):
            vector = node.get("query_vector")
            if isinstance(vector, list):
                return vector
            node = list(node.values())
        if isinstance(node, list):
            for child in node:
                found = find(child)
                if found is not None:
                    return found
        return None

    return find([leg.body for leg in p.requests])
