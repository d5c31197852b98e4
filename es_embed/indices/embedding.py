"""Embed documents the way their index wants them: one vector each, or passage by passage.

The follower, backfill and the loader all call ``embed_docs``, so one rule decides what a
document's write-back carries. For passages: each text is tokenised once with offsets and
cut (``passages.pieces``) on the bulk lane's tokenizer thread (``EmbeddingService.
embed_split``: a page of long documents is a lot of Python, kept off the event loop), and
every passage goes to the bulk lane as one input, so the batcher's token budget counts
passages, not documents.
"""

from __future__ import annotations

from collections.abc import Sequence

from es_embed.embed.protocol import Spans
from es_embed.embed.service import EmbeddingService
from es_embed.indices.document import DocText, Embedded, Passage
from es_embed.indices.passages import Piece, pieces
from es_embed.indices.resolve import IndexTarget


async def embed_docs(
    service: EmbeddingService, target: IndexTarget, docs: Sequence[DocText]
) -> list[Embedded]:
    """What each document's write-back carries, in order; raises EmbedError like the
    service (an OVERLOADED lane is the caller's to wait out)."""
    if not docs:
        return []
    if target.passages is None:
        return list(await service.embed_documents([d.text for d in docs], target.dims))
    p = target.passages
    budget = {"max_tokens": p.max_tokens, "overlap": p.overlap_tokens,
              "specials": service.info.special_tokens}  # fmt: skip
    plans: dict[int, list[Piece]] = {}

    def split(i: int, spans: Spans) -> list[Sequence[int]]:  # on the tokenizer thread
        plans[i] = pieces(docs[i].text, docs[i].body_start, spans.ids, spans.offsets, **budget)
        return [piece.ids for piece in plans[i]]

    vectors = await service.embed_split([d.text for d in docs], split, target.dims)
    return [
        [Passage(piece.start, piece.end, v) for piece, v in zip(plans[i], found, strict=True)]
        for i, found in enumerate(vectors)
    ]
