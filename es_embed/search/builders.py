"""Pure functions from a search request to Elasticsearch request bodies.

Nothing here talks to Elasticsearch, so every body is tested as an exact dict. ``plan``
picks the bodies for a mode and fusion; ``execute`` runs them and ``devconsole`` prints
the same bodies, which is why a pasted request returns the same hits.

Legs of a client-side hybrid fetch their first ``window`` hits from offset 0; ``from``
and ``k`` page inside the fused list, so page 2 never re-ranks page 1. The single-leg
modes use the same knn ``k`` (``window``) for the same reason: approximate kNN with a
larger ``k`` may order its top differently, and a page must not depend on ``from``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from es_embed.indices.resolve import IndexTarget
from es_embed.search.passages import PassageRead, inner_hits, knn_field, read_plan
from es_embed.search.spec import MAX_NUM_CANDIDATES, SearchSpec, Source

Body = dict[str, Any]


def num_candidates_for(k: int, explicit: int | None = None) -> int:
    """Default HNSW candidate list: max(100, 2k), capped at Elasticsearch's ceiling."""
    if explicit is not None:
        return explicit
    return min(max(100, 2 * k), MAX_NUM_CANDIDATES)


EMBED_RECORD = "_embed"  # the follower's bookkeeping (hash, model, dims, time) in each doc


def source_filter(source: Source, vector_field: str) -> Any:
    """What ``_source`` asks for: by default everything but the (large) vector; never the
    internal ``_embed`` record unless it is named (a wildcard or ``true`` does not name it)."""
    if source is None:
        return {"excludes": [vector_field, EMBED_RECORD]}
    if source is True:
        return {"excludes": [EMBED_RECORD]}
    if isinstance(source, list):
        if _names_embed(source) or not any("*" in f for f in source):
            return source  # plain field names never match _embed by accident
        return {"includes": source, "excludes": [EMBED_RECORD]}
    if isinstance(source, dict):  # includes/excludes: strings or lists (checked by spec)
        if _names_embed(_as_list(source.get("includes", source.get("include")))):
            return source
        key = "exclude" if "exclude" in source else "excludes"
        return {**source, key: [*_as_list(source.get(key)), EMBED_RECORD]}
    return source


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _names_embed(fields: list[Any]) -> bool:
    return any(
        isinstance(f, str) and (f == EMBED_RECORD or f.startswith(EMBED_RECORD + "."))
        for f in fields
    )


def bm25_query(
    text: str,
    fields: Sequence[str],
    filters: Sequence[Mapping[str, Any]] = (),
    *,
    boost: float | None = None,
    name: str | None = None,
) -> Body:
    """``multi_match`` over the text fields, inside a bool filter when there are filters."""
    match: Body = {"multi_match": {"query": text, "fields": list(fields)}}
    if not filters and boost is None and name is None:
        return match
    inner: Body = {"must": [match]}
    if filters:
        inner["filter"] = [dict(f) for f in filters]
    if boost is not None:
        inner["boost"] = boost
    if name is not None:
        inner["_name"] = name
    return {"bool": inner}


def knn_section(
    vector: Sequence[float],
    field: str,
    k: int,
    filters: Sequence[Mapping[str, Any]] = (),
    *,
    num_candidates: int | None = None,
    boost: float | None = None,
    name: str | None = None,
    inner_hits: Body | None = None,
) -> Body:
    """The top-level ``knn`` search section; filters are pre-filters (applied during the
    HNSW walk), so a filtered search still returns ``k`` hits when ``k`` exist. On a nested
    field (passages) ``k`` counts documents, and ``inner_hits`` brings each one's best."""
    section: Body = {
        "field": field,
        "query_vector": [float(x) for x in vector],
        "k": k,
        "num_candidates": num_candidates_for(k, num_candidates),
    }
    if filters:
        section["filter"] = [dict(f) for f in filters]
    if inner_hits is not None:
        section["inner_hits"] = inner_hits
    if boost is not None:
        section["boost"] = boost
    if name is not None:
        section["_name"] = name
    return section


def bm25_body(
    text: str,
    fields: Sequence[str],
    *,
    size: int,
    from_: int = 0,
    filters: Sequence[Mapping[str, Any]] = (),
    source: Any = True,
) -> Body:
    return {
        "query": bm25_query(text, fields, filters),
        "size": size,
        "from": from_,
        "_source": source,
    }


def knn_body(
    vector: Sequence[float],
    field: str,
    *,
    k: int,
    size: int,
    from_: int = 0,
    filters: Sequence[Mapping[str, Any]] = (),
    num_candidates: int | None = None,
    source: Any = True,
    inner_hits: Body | None = None,
) -> Body:
    return {
        "knn": knn_section(
            vector, field, k, filters, num_candidates=num_candidates, inner_hits=inner_hits
        ),
        "size": size,
        "from": from_,
        "_source": source,
    }


def sum_body(
    text: str,
    vector: Sequence[float],
    conf: IndexTarget,
    *,
    k: int,
    size: int,
    from_: int = 0,
    filters: Sequence[Mapping[str, Any]] = (),
    weights: Mapping[str, float],
    num_candidates: int | None = None,
    source: Any = True,
    inner_hits: Body | None = None,
) -> Body:
    """One ``_search`` with ``query`` and ``knn``: Elasticsearch adds the boosted scores.

    Both parts are named, so each hit's ``matched_queries`` carries the per-leg score
    (with ``include_named_queries_score``); the raw scales differ (BM25 is unbounded,
    cosine kNN is in [0, 1]), which the weights must account for.
    """
    return {
        "query": bm25_query(text, conf.text_fields, filters, boost=weights["bm25"], name="bm25"),
        "knn": knn_section(
            vector,
            knn_field(conf),
            k,
            filters,
            num_candidates=num_candidates,
            boost=weights["knn"],
            name="knn",
            inner_hits=inner_hits,
        ),
        "size": size,
        "from": from_,
        "_source": source,
    }


def native_body(
    kind: str,
    text: str,
    vector: Sequence[float],
    conf: IndexTarget,
    *,
    window: int,
    size: int,
    from_: int = 0,
    filters: Sequence[Mapping[str, Any]] = (),
    weights: Mapping[str, float],
    rank_constant: int = 60,
    num_candidates: int | None = None,
    source: Any = True,
) -> Body:
    """The ``rrf`` or ``linear`` retriever over the same two legs (licence permitting)."""
    standard = {"standard": {"query": bm25_query(text, conf.text_fields, filters)}}
    # The retrievers take no inner_hits: on a passages index this finds documents only.
    knn = {"knn": knn_section(
        vector, knn_field(conf), window, filters, num_candidates=num_candidates
    )}  # fmt: skip
    retriever: Body
    if kind == "rrf":
        retriever = {
            "rrf": {
                "retrievers": [standard, knn],
                "rank_constant": rank_constant,
                "rank_window_size": window,
            }
        }
    elif kind == "linear":
        retriever = {
            "linear": {
                "retrievers": [
                    {"retriever": standard, "weight": weights["bm25"], "normalizer": "minmax"},
                    {"retriever": knn, "weight": weights["knn"], "normalizer": "minmax"},
                ],
                "rank_window_size": window,
            }
        }
    else:
        raise ValueError(f"unknown native retriever {kind!r}")
    return {"retriever": retriever, "size": size, "from": from_, "_source": source}


@dataclass(frozen=True)
class LegRequest:
    name: str  # "bm25", "knn", "sum" or "native"
    body: Body


@dataclass(frozen=True)
class Plan:
    """The request(s) that answer one search, and how their hits become the answer."""

    index: str
    requests: tuple[LegRequest, ...]
    fuse: bool  # True: the legs run in one _msearch and are fused client-side
    named_scores: bool = False  # sum: read per-leg scores from matched_queries
    rerank: int | None = None  # then the sidecar reranks the top N of the ranked list
    text_fields: tuple[str, ...] = ()  # what the reranker reads of each hit's _source
    text_in_source: bool = True  # False: the source filter may leave the text out
    # A passages index: the reranker reads each hit's best passage of this nested field
    rerank_passages: str | None = None
    passages: PassageRead | None = None  # each hit's best passages come back as inner hits

    @property
    def pages_here(self) -> bool:
        """The requests fetch the window from offset 0 and the sidecar takes the page."""
        return self.fuse or self.rerank is not None


def plan(spec: SearchSpec, conf: IndexTarget, vector: Sequence[float] | None) -> Plan:
    """The bodies for ``spec`` on index ``conf``; ``vector`` is needed by all but bm25."""
    p = _ranking_plan(spec, conf, vector)
    if spec.rerank is None:
        return p
    return replace(
        p,
        rerank=spec.rerank,
        text_fields=conf.text_fields,
        # Only the default filters (everything but the vector and _embed) surely hold the text.
        text_in_source=spec.source is None or spec.source is True,
        rerank_passages=conf.vector_field if conf.passages is not None else None,
    )


def _ranking_plan(spec: SearchSpec, conf: IndexTarget, vector: Sequence[float] | None) -> Plan:
    source = source_filter(spec.source, conf.vector_field)
    common: dict[str, Any] = {"filters": spec.filter, "source": source}
    # A reranked single search fetches the whole window, as a hybrid leg does: the page is
    # taken from the reranked list, so page 2 never reranks page 1.
    size, from_ = (spec.window, 0) if spec.rerank is not None else (spec.k, spec.from_)
    if spec.mode == "bm25":
        body = bm25_body(spec.query, conf.text_fields, size=size, from_=from_, **common)
        return Plan(spec.index, (LegRequest("bm25", body),), fuse=False)
    if vector is None:
        raise ValueError(f"mode {spec.mode} needs a query vector")
    knn_args: dict[str, Any] = {"k": spec.window, "num_candidates": spec.num_candidates}
    native = spec.mode == "hybrid" and spec.fusion.startswith("native_")
    read: PassageRead | None = None
    if not native:
        common["source"], read = read_plan(conf, spec.passages, source)
        knn_args["inner_hits"] = inner_hits(conf, spec.passages)
    if spec.mode == "knn":
        body = knn_body(vector, knn_field(conf), size=size, from_=from_, **knn_args, **common)
        return Plan(spec.index, (LegRequest("knn", body),), fuse=False, passages=read)
    if spec.fusion == "sum":
        body = sum_body(
            spec.query, vector, conf, size=size, from_=from_,
            weights=spec.weights, **knn_args, **common,
        )  # fmt: skip
        return Plan(spec.index, (LegRequest("sum", body),), fuse=False, named_scores=True,
                    passages=read)  # fmt: skip
    if native:
        body = native_body(
            spec.fusion.removeprefix("native_"), spec.query, vector, conf,
            window=spec.window, size=size, from_=from_, weights=spec.weights,
            rank_constant=spec.rank_constant, num_candidates=spec.num_candidates, **common,
        )  # fmt: skip
        return Plan(spec.index, (LegRequest("native", body),), fuse=False)
    legs = (
        LegRequest("bm25", bm25_body(spec.query, conf.text_fields, size=spec.window, **common)),
        LegRequest(
            "knn", knn_body(vector, knn_field(conf), size=spec.window, **knn_args, **common)
        ),
    )
    return Plan(spec.index, legs, fuse=True, passages=read)


def text_body(keys: Sequence[tuple[str, str]], text_fields: Sequence[str]) -> Body:
    """The text fields of exactly these ``(_index, _id)`` hits, read from ``_source``.

    By ``_id`` within each concrete index (one alias may hold the same ``_id`` twice); a
    search rather than ``_mget``, so custom routing needs no knowing.
    """
    return {"query": ids_query(keys), "size": len(keys), "_source": list(text_fields)}


def ids_query(keys: Sequence[tuple[str, str]]) -> Body:
    """Exactly the documents ``(_index, _id)``: by ``_id`` within each concrete index."""
    by_index: dict[str, list[str]] = {}
    for index, doc_id in keys:
        by_index.setdefault(index, []).append(doc_id)
    per_index = [
        {"bool": {"filter": [{"term": {"_index": index}}, {"ids": {"values": ids}}]}}
        for index, ids in by_index.items()
    ]
    return {"bool": {"should": per_index, "minimum_should_match": 1}}


def msearch_lines(p: Plan) -> list[Body]:
    """Header/body pairs for one ``_msearch`` carrying every request of the plan."""
    lines: list[Body] = []
    for leg in p.requests:
        lines.append({"index": p.index})
        lines.append(leg.body)
    return lines
