"""Embed documents the way their index wants them: one vector each, or passage by passage.

The follower, backfill and the loader all call ``embed_docs``, so one rule decides what a
document's write-back carries. For passages: the texts are tokenised once with offsets
(``EmbeddingService.spans``), cut (``passages.pieces``, off the event loop: a page of long
documents is a lot of Python), and every passage goes to the bulk lane as one input, so the
batcher's token budget counts passages, not documents.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import numpy as np

from es_embed.config import PassageSettings
from es_embed.embed.protocol import Spans
from es_embed.embed.service import EmbeddingService
from es_embed.indices.document import DocText, Embedded, Passage
from es_embed.indices.passages import Piece, pieces
from es_embed.indices.resolve import IndexTarget

# Passages per request to the bulk lane: well under its queue bound (bulk_queue, 8192 by
# default), so one long document can never ask for more than the lane ever admits.
PASSAGES_PER_REQUEST = 256


async def embed_docs(
    service: EmbeddingService, target: IndexTarget, docs: Sequence[DocText]
) -> list[Embedded]:
    """What each document's write-back carries, in order; raises EmbedError like the
    service (an OVERLOADED lane is the caller's to wait out)."""
    if not docs:
        return []
    if target.passages is None:
        return list(await service.embed_documents([d.text for d in docs], target.dims))
    spans = await service.spans([d.text for d in docs])
    specials = len(service.wrap((0,)).ids) - 1
    plans = await asyncio.to_thread(_plan, docs, spans, target.passages, specials)
    flat = [service.wrap(piece.ids) for plan in plans for piece in plan]
    vectors: list[np.ndarray] = []
    for at in range(0, len(flat), PASSAGES_PER_REQUEST):
        part = flat[at : at + PASSAGES_PER_REQUEST]
        vectors.extend(await service.embed_tokens(part, target.dims))
    out: list[Embedded] = []
    at = 0
    for plan in plans:
        mine = vectors[at : at + len(plan)]
        out.append([Passage(p.start, p.end, v) for p, v in zip(plan, mine, strict=True)])
        at += len(plan)
    return out


def _plan(
    docs: Sequence[DocText], spans: Sequence[Spans], p: PassageSettings, specials: int
) -> list[list[Piece]]:
    cut = functools.partial(
        pieces, max_tokens=p.max_tokens, overlap=p.overlap_tokens, specials=specials
    )
    return [cut(d.text, d.body_start, s.ids, s.offsets) for d, s in zip(docs, spans, strict=True)]
