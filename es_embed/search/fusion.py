"""Client-side fusion of ranked legs, and paging inside the fused window.

The formulas (also printed by ``--dev-console``, so anyone can redo them by hand):

- RRF: ``score(d) = sum over legs L containing d of 1 / (rank_constant + rank_L(d))``,
  with ``rank_L`` counted from 1 within the first ``window`` hits of leg L.
- linear: ``score(d) = sum over legs L containing d of w_L * (s_L(d) - min_L) /
  (max_L - min_L)``, min and max taken over leg L's first ``window`` hits; a leg whose
  hits all score the same gives each of them 1.0.

A document missing from a leg gets nothing from it. Ties are broken by ``_index`` then
``_id`` (ascending), so the order never depends on which leg answered first, and a page
is always a slice of the same fused list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from es_embed.search.passages import PassageHit

Key = tuple[str, str]  # (_index, _id): one alias may cover several indices


@dataclass(frozen=True)
class LegHit:
    """One hit of one leg, as Elasticsearch returned it."""

    index: str
    id: str
    score: float
    source: Any = None
    passages: tuple[PassageHit, ...] | None = None  # the kNN leg of a passages index

    @property
    def key(self) -> Key:
        return (self.index, self.id)


@dataclass(frozen=True)
class LegScore:
    rank: int | None  # 1-based rank in the leg; None where the leg gives no ranking (sum)
    score: float  # the leg's raw score
    contribution: float | None = None  # what this leg added to the fused score


@dataclass
class Hit:
    index: str
    id: str
    score: float
    source: Any
    legs: dict[str, LegScore] = field(default_factory=dict)
    passages: Sequence[PassageHit] | None = None  # best first; None: the index has none

    def to_json(self) -> dict[str, Any]:
        out = {
            "_index": self.index,
            "_id": self.id,
            "_score": self.score,
            "_source": self.source,
            "legs": {
                name: {"rank": leg.rank, "score": leg.score} for name, leg in self.legs.items()
            },
        }
        if self.passages is not None:
            out["passages"] = [p.to_json() for p in self.passages]
        return out


def _fuse(
    legs: Mapping[str, Sequence[LegHit]],
    window: int,
    contribution: Callable[[str, int, LegHit, Sequence[LegHit]], float],
) -> list[Hit]:
    fused: dict[Key, Hit] = {}
    for name, hits in legs.items():
        top = hits[:window]
        for rank, hit in enumerate(top, start=1):
            part = contribution(name, rank, hit, top)
            entry = fused.get(hit.key)
            if entry is None:
                # The source is the same document in either leg; keep the first one seen.
                entry = fused[hit.key] = Hit(hit.index, hit.id, 0.0, hit.source)
            if name in entry.legs:
                continue  # a leg lists a document once; ignore a duplicate defensively
            if hit.passages is not None:  # only the kNN leg finds passages
                entry.passages = hit.passages
            entry.score += part
            entry.legs[name] = LegScore(rank, hit.score, part)
    return sorted(fused.values(), key=lambda h: (-h.score, h.index, h.id))


def rrf(
    legs: Mapping[str, Sequence[LegHit]], *, rank_constant: int = 60, window: int = 100
) -> list[Hit]:
    """Reciprocal rank fusion of the legs' first ``window`` hits."""
    return _fuse(legs, window, lambda _name, rank, _hit, _top: 1.0 / (rank_constant + rank))


def linear(
    legs: Mapping[str, Sequence[LegHit]], *, weights: Mapping[str, float], window: int = 100
) -> list[Hit]:
    """Weighted sum of per-leg min-max normalised scores over the first ``window`` hits."""
    bounds: dict[str, tuple[float, float]] = {}
    for name, hits in legs.items():
        scores = [h.score for h in hits[:window]]
        if scores:
            bounds[name] = (min(scores), max(scores))

    def part(name: str, _rank: int, hit: LegHit, _top: Sequence[LegHit]) -> float:
        low, high = bounds[name]
        norm = (hit.score - low) / (high - low) if high > low else 1.0
        return weights.get(name, 0.0) * norm

    return _fuse(legs, window, part)


def single(name: str, hits: Sequence[LegHit], offset: int = 0) -> list[Hit]:
    """One leg as the answer: its own order and scores, ranks counted from ``offset``."""
    return [
        Hit(
            h.index,
            h.id,
            h.score,
            h.source,
            {name: LegScore(offset + i, h.score, h.score)},
            h.passages,
        )  # fmt: skip
        for i, h in enumerate(hits, start=1)
    ]


def page(hits: Sequence[Hit], from_: int, size: int) -> list[Hit]:
    """A page of the fused window: past its end there is nothing, as with Elasticsearch."""
    return list(hits[from_ : from_ + size])
