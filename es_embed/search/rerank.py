"""The sidecar's last stage of a search: rerank the top of the ranked list.

The reranker comes in as a callable (``RerankStage``), as the query embedder does, so
search never imports the model. Each hit's text is what the follower embeds
(``document_text``: the index's text fields joined by newlines), read from ``_source``.

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

from es_embed.indices.document import document_text
from es_embed.search.fusion import Hit, Key, LegScore

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
