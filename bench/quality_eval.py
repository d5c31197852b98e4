"""How ``bench/quality.py`` scores its runs: the two halves, nDCG@10 and Recall@100 (checked
against ``ranx``), and the grid that chose the ``auto`` fusion's constants.

The halves: a query's half is fixed by a hash of its id, so every run, and every later
run, reports the same queries; ``auto``'s constants were chosen on the tuning half only.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from es_embed.search import fusion
from es_embed.search.fusion import AUTO, AutoParams, Hit, LegHit

DEPTH = 100  # hits per query: Recall@100
LEGS = ("bm25", "knn")
EQUAL = {"bm25": 1.0, "knn": 1.0}  # the request's weights when none are given
# The candidates for the auto fusion's constants (fusion.AutoParams), tried on the tuning half.
GRID = [AutoParams(w, p) for p in (1.0, 2.0) for w in (0.25, 0.5, 0.75, 1.0, 1.5)]

Qrels = dict[str, dict[str, int]]
Run = dict[str, list[str]]


def half(qid: str) -> str:
    """``tune`` or ``report``: a fixed split by a hash of the query id, the same on every run."""
    return "tune" if hashlib.sha256(qid.encode()).digest()[0] % 2 == 0 else "report"


def halves(qrels: Qrels) -> dict[str, Qrels]:
    out: dict[str, Qrels] = {"tune": {}, "report": {}}
    for qid, rels in qrels.items():
        out[half(qid)][qid] = rels
    return out


def ndcg_at(run: Run, qrels: Qrels, k: int) -> float:
    """Mean nDCG@k with gain = relevance (trec_eval / BEIR), over every judged query."""
    total = 0.0
    for qid, rels in qrels.items():
        ranked = run.get(qid, [])[:k]
        dcg = sum(rels.get(d, 0) / np.log2(i + 2) for i, d in enumerate(ranked))
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:k]
        idcg = sum(r / np.log2(i + 2) for i, r in enumerate(ideal))
        total += dcg / idcg if idcg > 0 else 0.0
    return total / len(qrels)


def recall_at(run: Run, qrels: Qrels, k: int) -> float:
    total = 0.0
    for qid, rels in qrels.items():
        relevant = {d for d, r in rels.items() if r > 0}
        found = relevant & set(run.get(qid, [])[:k])
        total += len(found) / len(relevant) if relevant else 0.0
    return total / len(qrels)


def ranx_scores(run: Run, qrels: Qrels) -> tuple[float, float]:
    from ranx import Qrels as RQrels
    from ranx import Run as RRun
    from ranx import evaluate

    # Scores from ranks, so ranx sees exactly our order (no tie-breaking of its own).
    # ranx drops queries with no hits; give them a dummy hit so every query counts.
    scored = {
        q: ({d: float(len(ids) - i) for i, d in enumerate(ids)} or {"__none__": 0.0})
        for q, ids in run.items()
    }
    result = evaluate(RQrels(qrels), RRun(scored), ["ndcg@10", f"recall@{DEPTH}"])
    return float(result["ndcg@10"]), float(result[f"recall@{DEPTH}"])


def ranked(hits: dict[str, list[Hit]] | dict[str, list[LegHit]], drop_self: bool) -> Run:
    """Document ids in order; ``drop_self`` (ArguAna, BEIR's rule) drops a hit whose id is the
    query's, after fusion."""
    return {q: [h.id for h in hs if not (drop_self and h.id == q)] for q, hs in hits.items()}


def metrics(label: str, run: Run, qrels: Qrels) -> tuple[float, float]:
    """nDCG@10 and Recall@100 over ``qrels``' queries, ours, refused unless ranx agrees."""
    run = {q: run[q] for q in qrels}
    ours = (ndcg_at(run, qrels, 10), recall_at(run, qrels, DEPTH))
    theirs = ranx_scores(run, qrels)
    if not np.allclose(ours, theirs, atol=1e-6):
        raise SystemExit(f"{label}: our metrics {ours} differ from ranx {theirs}")
    return ours


def tune(
    qrels: Qrels, runs: dict[str, dict[str, list[Hit]]], zero: dict[str, float], drop_self: bool
) -> list[dict[str, Any]]:
    """nDCG@10 on ``qrels`` (the tuning half) of every candidate in GRID, from the bm25 and
    knn runs' hits.

    The same ``fusion.auto`` the searcher runs, on the same legs (k = window = 100), so the
    default's row must equal the searcher's own auto run on that half.
    """
    legs = {
        q: {name: [LegHit(h.index, h.id, h.score) for h in runs[name][q]] for name in LEGS}
        for q in qrels
    }
    rows = []
    for params in GRID:
        fused = {
            q: fusion.auto(two, weights=EQUAL, zero=zero, window=DEPTH, params=params)
            for q, two in legs.items()
        }
        rows.append({"knn_weight": params.knn_weight, "power": params.power,
                     "ndcg@10": ndcg_at(ranked(fused, drop_self), qrels, 10)})  # fmt: skip
    searched = ndcg_at(ranked(runs["hybrid auto"], drop_self), qrels, 10)
    (default,) = [r for r in rows if AutoParams(r["knn_weight"], r["power"]) == AUTO]
    if abs(default["ndcg@10"] - searched) > 1e-9:
        raise SystemExit(f"tuning grid {default} differs from the searcher's auto run {searched}")
    return rows


def grid_table(report: dict[str, Any]) -> list[str]:
    """The tuning half: each leg, and auto with each candidate (the numbers that chose it)."""
    legs = {r["run"]: r["tune"]["ndcg@10"] for r in report["rows"] if r["run"] in LEGS}
    if len(legs) < 2 or not report["tuning_grid"]:
        return []
    best = max(legs.values())
    lines = [
        f"Tuning half ({report['split']['tune']:,} queries): bm25 {legs['bm25']:.4f}, "
        f"knn {legs['knn']:.4f}; auto with each candidate (* the default):",
        "",
        "| knn_weight | power | nDCG@10 | vs the better leg |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for row in report["tuning_grid"]:
        mark = " *" if AutoParams(row["knn_weight"], row["power"]) == AUTO else ""
        lines.append(f"| {row['knn_weight']:g}{mark} | {row['power']:g} | "
                     f"{row['ndcg@10']:.4f} | {row['ndcg@10'] - best:+.4f} |")  # fmt: skip
    return lines
