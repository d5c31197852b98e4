"""Fusion on hand-made rankings: RRF, linear min-max, ties, one-leg documents, windows, paging."""

from __future__ import annotations

import pytest

from es_embed.search.fusion import AutoParams, LegHit, LegScore, auto, linear, page, rrf, single


def leg(*pairs: tuple[str, float]) -> list[LegHit]:
    return [LegHit("idx", doc, score, {"id": doc}) for doc, score in pairs]


BM25 = leg(("a", 9.0), ("b", 7.0), ("c", 3.0), ("d", 1.0))
KNN = leg(("c", 0.9), ("a", 0.8), ("e", 0.5))


def ids(hits: list) -> list[str]:
    return [h.id for h in hits]


def test_rrf_sums_reciprocal_ranks_and_keeps_each_legs_rank_and_score() -> None:
    hits = rrf({"bm25": BM25, "knn": KNN}, rank_constant=60)
    scores = {h.id: h.score for h in hits}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["e"] == pytest.approx(1 / 63)
    assert ids(hits) == ["a", "c", "b", "e", "d"]
    a = hits[0]
    assert a.legs == {
        "bm25": LegScore(1, 9.0, pytest.approx(1 / 61)),
        "knn": LegScore(2, 0.8, pytest.approx(1 / 62)),
    }
    assert a.to_json()["legs"] == {
        "bm25": {"rank": 1, "score": 9.0},
        "knn": {"rank": 2, "score": 0.8},
    }


def test_a_document_in_one_leg_only_has_only_that_leg() -> None:
    hits = {h.id: h for h in rrf({"bm25": BM25, "knn": KNN})}
    assert set(hits["e"].legs) == {"knn"}
    assert set(hits["d"].legs) == {"bm25"}
    assert hits["e"].to_json()["legs"] == {"knn": {"rank": 3, "score": 0.5}}


def test_ties_are_broken_by_id_whatever_the_leg_order() -> None:
    # x first in bm25, y first in knn: equal RRF scores.
    one = {"bm25": leg(("y", 2.0)), "knn": leg(("x", 0.3))}
    two = {"knn": leg(("x", 0.3)), "bm25": leg(("y", 2.0))}
    assert ids(rrf(one)) == ids(rrf(two)) == ["x", "y"]
    assert rrf(one)[0].score == rrf(one)[1].score


def test_window_shorter_than_k_fuses_only_the_window() -> None:
    hits = rrf({"bm25": BM25, "knn": KNN}, window=2)
    # c is rank 3 in bm25: outside the window there, so only its knn rank counts.
    assert ids(hits) == ["a", "c", "b"]
    assert hits[1].legs == {"knn": LegScore(1, 0.9, pytest.approx(1 / 61))}
    assert ids(page(hits, 0, 10)) == ["a", "c", "b"]  # k=10 asks for more than exists


def test_empty_legs() -> None:
    assert rrf({"bm25": [], "knn": []}) == []
    assert linear({"bm25": [], "knn": []}, weights={"bm25": 1, "knn": 1}) == []
    only_knn = rrf({"bm25": [], "knn": KNN})
    assert ids(only_knn) == ["c", "a", "e"]
    assert all(set(h.legs) == {"knn"} for h in only_knn)
    lin = linear({"bm25": BM25, "knn": []}, weights={"bm25": 1, "knn": 1})
    assert ids(lin) == ["a", "b", "c", "d"]


def test_linear_min_max_normalises_each_leg_then_weights() -> None:
    hits = linear({"bm25": BM25, "knn": KNN}, weights={"bm25": 1.0, "knn": 2.0})
    scores = {h.id: h.score for h in hits}
    # bm25: min 1, max 9; knn: min 0.5, max 0.9
    assert scores["a"] == pytest.approx((9 - 1) / 8 + 2 * (0.8 - 0.5) / 0.4)
    assert scores["c"] == pytest.approx((3 - 1) / 8 + 2 * 1.0)
    assert scores["b"] == pytest.approx(6 / 8)
    assert scores["e"] == pytest.approx(0.0)  # the minimum of its only leg
    assert scores["d"] == pytest.approx(0.0)
    assert ids(hits) == ["a", "c", "b", "d", "e"]  # 2.5, 2.25, 0.75, then d and e tie at 0


def test_linear_leg_with_equal_scores_gives_each_one() -> None:
    hits = linear({"bm25": leg(("p", 4.0), ("q", 4.0)), "knn": []}, weights={"bm25": 0.5})
    assert [(h.id, h.score) for h in hits] == [("p", 0.5), ("q", 0.5)]


def test_linear_min_max_is_taken_over_the_window_only() -> None:
    hits = linear({"bm25": BM25}, weights={"bm25": 1.0}, window=3)
    # min and max over a, b, c (9, 7, 3); d (score 1) is outside the window
    assert [(h.id, h.score) for h in hits] == [("a", 1.0), ("b", pytest.approx(4 / 6)), ("c", 0.0)]


def test_same_document_in_two_indices_is_two_hits() -> None:
    legs = {"bm25": [LegHit("i1", "a", 1.0)], "knn": [LegHit("i2", "a", 0.9)]}
    assert [(h.index, h.id) for h in rrf(legs)] == [("i1", "a"), ("i2", "a")]


def test_paging_is_a_stable_slice_of_the_fused_window() -> None:
    many = {
        "bm25": leg(*[(f"d{i:02d}", 100.0 - i) for i in range(40)]),
        "knn": leg(*[(f"d{i:02d}", 1.0 - i / 100) for i in range(39, -1, -2)]),
    }
    fused = rrf(many, window=30)
    pages = [page(fused, start, 10) for start in (0, 10, 20, 30, 40, 50)]
    joined = [h.id for p in pages for h in p]
    assert joined == ids(fused)  # pages tile the window: nothing lost, nothing repeated
    assert len(set(joined)) == len(joined)
    assert page(fused, 0, 10) == page(rrf(many, window=30), 0, 10)  # same input, same page
    assert page(fused, len(fused), 10) == []


def test_single_leg_keeps_server_order_and_counts_ranks_from_the_offset() -> None:
    hits = single("bm25", BM25[:2], offset=20)
    assert [(h.id, h.score, h.legs["bm25"].rank) for h in hits] == [("a", 9.0, 21), ("b", 7.0, 22)]


# ---- auto: each leg's evidence relative to its best hit, measured from no evidence ----------

ZERO = {"bm25": 0.0, "knn": 0.5}  # cosine: an orthogonal document scores (1 + 0) / 2
EQUAL = {"bm25": 1.0, "knn": 1.0}


def test_auto_scores_each_leg_from_its_zero_and_its_best_hit() -> None:
    # window 10: neither leg filled it, so what they left out has no evidence (floor 0)
    hits = auto({"bm25": BM25, "knn": KNN}, weights=EQUAL, zero=ZERO, window=10)
    scores = {h.id: h.score for h in hits}
    # bm25: e = s / 9; knn: e = (s - 0.5) / (0.9 - 0.5), times knn_weight 0.5
    assert scores["a"] == pytest.approx(9 / 9 + 0.5 * 0.3 / 0.4)
    assert scores["c"] == pytest.approx(3 / 9 + 0.5 * 1.0)
    assert scores["b"] == pytest.approx(7 / 9)
    assert scores["e"] == 0.0  # knn 0.5: a cosine of 0, no evidence at all
    assert scores["d"] == pytest.approx(1 / 9)
    assert ids(hits) == ["a", "c", "b", "d", "e"]
    assert hits[0].legs == {
        "bm25": LegScore(1, 9.0, pytest.approx(1.0)),
        "knn": LegScore(2, 0.8, pytest.approx(0.375)),
    }


def test_auto_a_full_window_measures_from_its_last_hit() -> None:
    # window 3: both legs filled it, so a document left out scored at most the last hit
    hits = auto({"bm25": BM25, "knn": KNN}, weights=EQUAL, zero=ZERO, window=3)
    scores = {h.id: h.score for h in hits}
    assert scores["a"] == pytest.approx((9 - 3) / 9 + 0.5 * (0.8 - 0.5) / 0.4)
    assert scores["c"] == pytest.approx(0.0 + 0.5 * (0.9 - 0.5) / 0.4)
    assert scores["b"] == pytest.approx((7 - 3) / 9)
    assert scores["e"] == pytest.approx(0.0)
    assert ids(hits) == ["a", "c", "b", "e"]  # d is past bm25's window


def test_auto_a_flat_leg_breaks_ties_instead_of_overriding_a_sharp_one() -> None:
    # knn cannot tell its hits apart (every cosine near 0.8); min-max stretches it to [0, 1]
    sharp = leg(("a", 10.0), ("b", 9.0), ("c", 2.0))
    flat = leg(("b", 0.91), ("a", 0.90), ("c", 0.89))
    legs = {"bm25": sharp, "knn": flat}
    assert ids(linear(legs, weights=EQUAL, window=3)) == ["b", "a", "c"]
    hits = auto(legs, weights=EQUAL, zero=ZERO, window=3)
    assert ids(hits) == ["a", "b", "c"]
    # bm25 from its last hit: 0.8, 0.7, 0; knn: (s - 0.89) / 0.41 * 0.5
    assert [h.score for h in hits] == pytest.approx(
        [0.8 + 0.5 * 0.01 / 0.41, 0.7 + 0.5 * 0.02 / 0.41, 0.0]
    )
    # ...but where bm25 ties, the flat leg decides
    tied = {"bm25": leg(("a", 5.0), ("b", 5.0), ("c", 1.0)), "knn": flat}
    assert ids(auto(tied, weights=EQUAL, zero=ZERO, window=3)) == ["b", "a", "c"]


def test_auto_weights_knn_weight_and_power() -> None:
    legs = {"bm25": BM25, "knn": KNN}
    hits = auto(legs, weights={"bm25": 2.0, "knn": 3.0}, zero=ZERO, window=10)
    scores = {h.id: h.score for h in hits}
    assert scores["c"] == pytest.approx(2 * 3 / 9 + 3 * 0.5 * 1.0)
    params = AutoParams(knn_weight=1.0, power=2.0)
    scores = {h.id: h.score for h in auto(legs, weights=EQUAL, zero=ZERO, params=params)}
    assert scores["a"] == pytest.approx(1.0 + (0.3 / 0.4) ** 2)
    assert scores["d"] == pytest.approx((1 / 9) ** 2)


def test_auto_a_leg_with_no_hit_above_zero_evidence_adds_nothing() -> None:
    below = leg(("x", 0.4), ("a", 0.3))  # every cosine negative
    hits = auto({"bm25": BM25, "knn": below}, weights=EQUAL, zero=ZERO, window=10)
    assert ids(hits) == ["a", "b", "c", "d", "x"]
    assert {h.id: h.score for h in hits}["x"] == 0.0
    # and a hit below zero counts as zero evidence, not as a penalty
    mixed = leg(("c", 0.9), ("a", 0.45))
    scores = {h.id: h.score for h in auto({"knn": mixed}, weights=EQUAL, zero=ZERO)}
    assert scores == {"c": pytest.approx(0.5), "a": 0.0}


def test_auto_empty_and_single_legs_and_leg_order() -> None:
    assert auto({"bm25": [], "knn": []}, weights=EQUAL, zero=ZERO) == []
    assert ids(auto({"bm25": [], "knn": KNN}, weights=EQUAL, zero=ZERO)) == ["c", "a", "e"]
    one = {"bm25": BM25, "knn": KNN}
    two = {"knn": KNN, "bm25": BM25}
    assert [(h.id, h.score) for h in auto(one, weights=EQUAL, zero=ZERO)] == [
        (h.id, h.score) for h in auto(two, weights=EQUAL, zero=ZERO)
    ]
