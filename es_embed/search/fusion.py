"""Client-side fusion of ranked legs, and paging inside the fused window.

The formulas (also printed by ``--dev-console``, so anyone can redo them by hand):

- RRF: ``score(d) = sum over legs L containing d of 1 / (rank_constant + rank_L(d))``,
  with ``rank_L`` counted from 1 within the first ``window`` hits of leg L.
- linear: ``score(d) = sum over legs L containing d of w_L * (s_L(d) - min_L) /
  (max_L - min_L)``, min and max taken over leg L's first ``window`` hits; a leg whose
  hits all score the same gives each of them 1.0.
- auto (the default): ``score(d) = sum over legs L containing d of w_L * (e_L(d) -
  floor_L)`` with the leg's evidence ``e_L(d) = max(0, (s_L(d) - z_L) / (max_L - z_L)) **
  power``, measured from the score ``z_L`` of a document with no evidence at all (bm25: 0;
  knn: an orthogonal vector, see ``ZERO_EVIDENCE``) and relative to the leg's best hit.
  ``floor_L`` is the evidence of the leg's last hit when it filled its window (a document it
  left out scored no better), else 0. ``w_knn`` carries ``AUTO.knn_weight``.

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


# The kNN _score Elasticsearch gives a document orthogonal to the query: (1 + cos) / 2 for
# cosine and dot_product, dot + 1 (for dot >= 0) for max_inner_product.
ZERO_EVIDENCE = {"cosine": 0.5, "dot_product": 0.5, "max_inner_product": 1.0}


@dataclass(frozen=True)
class AutoParams:
    """The ``auto`` fusion's two constants, fixed across datasets.

    Chosen by ``bench/quality.py`` on the tuning half of each dataset's queries (the
    README's "Retrieval quality" section has the grid and the rule).
    """

    knn_weight: float = 0.5  # a knn hit's evidence against a bm25 hit's, before `weights`
    power: float = 1.0  # >1 favours each leg's top hits over its middling ones


AUTO = AutoParams()


def auto(
    legs: Mapping[str, Sequence[LegHit]],
    *,
    weights: Mapping[str, float],
    zero: Mapping[str, float],
    window: int = 100,
    params: AutoParams = AUTO,
) -> list[Hit]:
    """Each leg's evidence relative to its best hit, summed: the default hybrid fusion.

    Min-max stretches every leg to [0, 1], so a leg whose hits are all alike (an English
    model reading Chinese: every cosine near 0.8) reorders the other leg as loudly as a
    sharp one. Measuring from ``zero`` (the score of no evidence) keeps such a leg's
    spread small: it breaks the other leg's near-ties instead of overriding it. ``zero``
    holds each leg's no-evidence score (bm25 0; knn ``ZERO_EVIDENCE[similarity]``).
    """
    scale = {"knn": params.knn_weight}
    shapes: dict[str, tuple[float, float, float]] = {}  # leg -> (zero, max, floor)
    for name, hits in legs.items():
        top = hits[:window]
        if not top:
            continue
        z, best = zero.get(name, 0.0), max(h.score for h in top)
        shapes[name] = (z, best, 0.0)
        if len(top) >= window:  # full window: what it left out scored at most its last hit
            shapes[name] = (z, best, _evidence(min(h.score for h in top), z, best, params))

    def part(name: str, _rank: int, hit: LegHit, _top: Sequence[LegHit]) -> float:
        z, best, floor = shapes[name]
        evidence = _evidence(hit.score, z, best, params) - floor
        return weights.get(name, 0.0) * scale.get(name, 1.0) * evidence

    return _fuse(legs, window, part)


def _evidence(score: float, zero: float, best: float, params: AutoParams) -> float:
    if best <= zero:
        return 0.0  # no hit of the leg beats a document with no evidence: it says nothing
    return float(max(0.0, (score - zero) / (best - zero)) ** params.power)


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
