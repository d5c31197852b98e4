"""Kibana Dev Tools text for a search plan: paste it and get the same hits.

Every request is printed as ``GET <index>/_search`` with its exact body (the query vector
inline). A client-side hybrid prints its two legs as two searches (they are the two
halves of the ``_msearch`` the sidecar sends) under a comment that states the fusion
formula and the page, so the fused list can be recomputed from the pasted answers.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from es_embed.search.builders import Plan
from es_embed.search.fusion import AUTO, ZERO_EVIDENCE
from es_embed.search.spec import SearchSpec

_VECTOR = "\x00query_vector\x00"


def render(p: Plan, spec: SearchSpec, reranker: str | None = None) -> str:
    """``reranker``: the model that reranks, named when the plan has a rerank stage."""
    out = [f"# es-embed search {json.dumps(spec.query, ensure_ascii=False)}", *_explain(p, spec)]
    if p.passages is not None:
        f = p.passages.field
        out.append(
            f"# passages: kNN on the nested {f}.vector counts k in documents; inner_hits gives "
            f"each hit's best {spec.passages}, whose text is characters [{f}.start, {f}.end) "
            f"of {' + newline + '.join(p.passages.text_fields)} in _source."
        )
    for leg in p.requests:
        out.append(f"# {leg.name}")
        params = "?include_named_queries_score=true" if p.named_scores else ""
        out.append(f"GET {p.index}/_search{params}")
        out.append(body_text(leg.body))
        out.append("")
    out.extend(_sidecar_part(p, spec, reranker))
    return "\n".join(out)


def _sidecar_part(p: Plan, spec: SearchSpec, reranker: str | None) -> list[str]:
    """What no Dev Tools request can do: the rerank stage, run in the sidecar."""
    if p.rerank is None:
        return []
    fields = ", ".join(p.text_fields)
    lines = [
        f"# then reranked in the sidecar: top {p.rerank} by {reranker or 'the reranker'}",
        f"# (each hit's text: {fields} from _source, joined by newlines; best first, ties and",
        f"# hits after the first {p.rerank} keep their order), and the page is "
        f"hits [{spec.from_}, {spec.from_ + spec.k}).",
    ]
    if p.rerank_passages is not None:
        f = p.rerank_passages
        lines += [
            "# Passages index: the reranker reads each hit's best passage as it was embedded",
            f"# (the first text field, a newline, characters [{f}.start, {f}.end) of the joined",
            "# text): the kNN leg's first inner hit; for hits without one (found by bm25 alone)",
            f"# the sidecar runs one more search: the knn on {f}.vector with the same query",
            "# vector, filtered to those hits' _id, k = their count, inner_hits size 1. A hit",
            "# with no passages yet is read whole.",
        ]
    if not p.text_in_source:
        lines.append(
            "# The source filter may leave the text out, so the sidecar reads it with one more "
            "search: the top hits by _id, _source = the text fields."
        )
    return lines


def body_text(body: dict[str, Any]) -> str:
    """Indented JSON with each query vector on one line, as float32 shortest reprs.

    The shortest repr of a float32 parses back to the very same float32, so the node
    scores exactly what the sidecar sent.
    """
    vectors: list[str] = []

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "query_vector" and isinstance(value, list):
                    vectors.append(_vector_text(value))
                    out[key] = _VECTOR
                else:
                    out[key] = strip(value)
            return out
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    text = json.dumps(strip(body), indent=2, ensure_ascii=False)
    for vector in vectors:
        text = text.replace(json.dumps(_VECTOR), vector, 1)
    return text


def _vector_text(values: list[float]) -> str:
    parts = (np.format_float_positional(np.float32(v), unique=True, trim="-") for v in values)
    return "[" + ", ".join(parts) + "]"


def _explain(p: Plan, spec: SearchSpec) -> list[str]:
    page = f"hits [{spec.from_}, {spec.from_ + spec.k})"
    if p.rerank is not None:  # the page is taken after the rerank (below)
        page = "the whole list" if p.fuse else f"hits [0, {spec.window})"
    if not p.fuse:
        if p.named_scores:
            w = spec.weights
            return [
                "# mode hybrid, fusion sum: Elasticsearch adds the bm25 query "
                f"(boost {w['bm25']:g}) and the knn section (boost {w['knn']:g});",
                f"# {page} of one search.",
            ]
        if spec.mode == "hybrid":
            retriever = spec.fusion.removeprefix("native_")
            return [f"# mode hybrid, fusion {spec.fusion} (the {retriever} retriever): {page}."]
        return [f"# mode {spec.mode}: {page} of one search."]
    lines = [
        f"# mode hybrid, fusion {spec.fusion} (client-side): run both searches below, take each",
        f"# leg's first {spec.window} hits (rank r counted from 1) and score each document:",
    ]
    if spec.fusion == "rrf":
        lines.append(f"#   score = sum over legs holding it of 1 / ({spec.rank_constant} + r)")
    elif spec.fusion == "auto":
        lines.extend(_auto_formula(spec))
    else:
        w = spec.weights
        lines.append(
            f"#   score = {w['bm25']:g} * mm_bm25 + {w['knn']:g} * mm_knn, where mm = "
            "(s - min) / (max - min) over that leg's hits (1 when max = min; 0 when absent)"
        )
    lines.append(f"# Sort by score (ties: _index, then _id ascending) and keep {page}.")
    return lines


def _auto_formula(spec: SearchSpec) -> list[str]:
    w = spec.weights
    power = "" if AUTO.power == 1 else f" ** {AUTO.power:g}"
    by_zero: dict[float, list[str]] = {}
    for similarity, zero in ZERO_EVIDENCE.items():
        by_zero.setdefault(zero, []).append(similarity)
    knn_zero = ", ".join(f"{z:g} for {' and '.join(names)}" for z, names in by_zero.items())
    return [
        f"#   score = {w['bm25']:g} * (e_bm25 - f_bm25) + {AUTO.knn_weight * w['knn']:g} * "
        "(e_knn - f_knn); a leg lacking the document adds 0.",
        f"#   e = max(0, (s - z) / (max - z)){power}: s the hit's score, max the leg's best, z the "
        "score of no",
        f"#   evidence (bm25 0; knn {knn_zero}).",
        f"#   f = e of the leg's last hit when the leg returned {spec.window} hits, else 0.",
    ]
