"""Run a search: embed the query (query lane, index dims), send the plan, fuse, page.

Client-side hybrid sends both legs in one ``_msearch`` (one round trip, works on the
Basic licence) and fuses here. ``sum`` and ``native`` are single ``_search`` requests
that Elasticsearch scores itself. Elasticsearch errors become ``EmbedError`` kinds, so
the API answers with a status and the CLI with one line.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from es_embed.errors import EmbedError, ErrorKind, invalid
from es_embed.indices.resolve import IndexTarget
from es_embed.search import fusion
from es_embed.search.builders import Plan, msearch_lines, plan
from es_embed.search.fusion import Hit, LegHit, LegScore
from es_embed.search.spec import SearchSpec

# (text, dims or None for the model's) -> unit vector; e.g. EmbeddingService.embed_query
QueryEmbedder = Callable[[str, int | None], Awaitable[np.ndarray]]

NATIVE_CACHE_SECONDS = 60.0
# Licences known to lack the rrf / linear retrievers; others are probed.
_LICENCES_WITHOUT_RETRIEVERS = ("basic", "standard", "gold")


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    took_ms: float  # the whole search: embedding, Elasticsearch round trip, fusion
    embed_ms: float  # the query embedding alone (0 for bm25)
    plan: Plan

    def to_json(self) -> dict[str, Any]:
        return {
            "hits": [h.to_json() for h in self.hits],
            "took_ms": round(self.took_ms, 3),
            "embed_ms": round(self.embed_ms, 3),
        }


class Searcher:
    """Searches the configured indices; one per process (it caches the native probe)."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        embed_query: QueryEmbedder,
        indices: Iterable[IndexTarget],
    ) -> None:
        self._es = es
        self._embed_query = embed_query
        self._indices = {conf.name: conf for conf in indices}
        self._native: dict[str, tuple[float, str | None]] = {}

    def index_settings(self, name: str) -> IndexTarget:
        conf = self._indices.get(name)
        if conf is None:
            known = ", ".join(sorted(self._indices)) or "none"
            raise EmbedError(
                ErrorKind.NOT_FOUND,
                f"index {name!r} is not configured for search (configured: {known})",
                param="index",
                code="index_not_found",
            )
        return conf

    async def prepare(self, spec: SearchSpec) -> tuple[Plan, float]:
        """Embed the query if the mode needs it and build the plan; returns (plan, embed ms)."""
        conf = self.index_settings(spec.index)
        vector: list[float] | None = None
        embed_ms = 0.0
        if spec.needs_vector:
            start = time.perf_counter()
            # The index's dims: the same Matryoshka truncation as its documents.
            try:
                raw = await self._embed_query(spec.query, conf.dims)
            except EmbedError as exc:
                raise _as_query_error(exc) from None
            embed_ms = (time.perf_counter() - start) * 1000
            vector = np.asarray(raw, dtype=np.float32).tolist()
        if spec.mode == "hybrid" and spec.fusion.startswith("native_"):
            await self.require_native(spec.index, spec.fusion.removeprefix("native_"))
        return plan(spec, conf, vector), embed_ms

    async def search(self, spec: SearchSpec) -> SearchResult:
        start = time.perf_counter()
        p, embed_ms = await self.prepare(spec)
        hits = await self.run(p, spec)
        return SearchResult(hits, (time.perf_counter() - start) * 1000, embed_ms, p)

    async def run(self, p: Plan, spec: SearchSpec) -> list[Hit]:
        if p.fuse:
            legs = await self._msearch(p, spec)
            if spec.fusion == "linear":
                fused = fusion.linear(legs, weights=spec.weights, window=spec.window)
            else:
                fused = fusion.rrf(legs, rank_constant=spec.rank_constant, window=spec.window)
            return fusion.page(fused, spec.from_, spec.k)
        (leg,) = p.requests
        try:
            resp = await self._es.search(
                index=p.index,
                body=leg.body,
                include_named_queries_score=True if p.named_scores else None,
            )
        except ApiError as exc:
            raise _api_error(exc, leg.name, spec) from None
        except TransportError as exc:
            raise _unreachable(exc) from None
        raw_hits = resp["hits"]["hits"]
        if leg.name in ("bm25", "knn"):
            return fusion.single(leg.name, _leg_hits(raw_hits), offset=spec.from_)
        return [_scored_hit(h, named=p.named_scores) for h in raw_hits]

    async def _msearch(self, p: Plan, spec: SearchSpec) -> dict[str, list[LegHit]]:
        try:
            resp = await self._es.msearch(searches=msearch_lines(p))
        except ApiError as exc:
            raise _api_error(exc, "hybrid", spec) from None
        except TransportError as exc:
            raise _unreachable(exc) from None
        legs: dict[str, list[LegHit]] = {}
        for leg, item in zip(p.requests, resp["responses"], strict=True):
            if "error" in item:
                raise _error_from(item.get("status", 500), item["error"], leg.name, spec)
            legs[leg.name] = _leg_hits(item["hits"]["hits"])
        return legs

    async def require_native(self, index: str, kind: str) -> None:
        """Refuse native fusion clearly unless the licence has it and a probe succeeds."""
        cached = self._native.get(kind)
        if cached is not None and time.monotonic() - cached[0] < NATIVE_CACHE_SECONDS:
            reason = cached[1]
        else:
            reason = await native_unavailable(self._es, index, kind)
            self._native[kind] = (time.monotonic(), reason)
        if reason is not None:
            raise EmbedError(
                ErrorKind.UNPROCESSABLE,
                f"fusion native_{kind} is not available on this cluster: {reason}; "
                f"use fusion {kind} (client-side, any licence)",
                param="fusion",
                code="native_fusion_unavailable",
            )


async def native_unavailable(es: AsyncElasticsearch, index: str, kind: str) -> str | None:
    """Why the ``kind`` retriever cannot run here, or None when it can (licence + probe)."""
    try:
        licence = (await es.license.get())["license"]
    except ApiError as exc:
        return f"GET _license failed ({exc.meta.status}: {_reason(exc.body)})"
    if licence.get("status") != "active" or licence.get("type") in _LICENCES_WITHOUT_RETRIEVERS:
        return (
            f"the {licence.get('status')} {licence.get('type')} licence does not include the "
            f"{kind} retriever (an enterprise or trial licence does)"
        )
    none: dict[str, Any] = {"standard": {"query": {"match_none": {}}}}
    children: list[Any]
    if kind == "linear":
        children = [{"retriever": none, "weight": 1.0}, {"retriever": none, "weight": 1.0}]
    else:
        children = [none, none]
    try:
        await es.search(
            index=index, body={"size": 0, "retriever": {kind: {"retrievers": children}}}
        )
    except ApiError as exc:
        return f"the probe answered {exc.meta.status}: {_reason(exc.body)}"
    return None


def _leg_hits(raw_hits: list[dict[str, Any]]) -> list[LegHit]:
    return [LegHit(h["_index"], h["_id"], float(h["_score"]), h.get("_source")) for h in raw_hits]


def _scored_hit(raw: Mapping[str, Any], named: bool) -> Hit:
    legs: dict[str, LegScore] = {}
    if named:
        # sum: one ranking, so legs have no rank; matched_queries holds each boosted part.
        for name, score in (raw.get("matched_queries") or {}).items():
            legs[name] = LegScore(None, float(score), float(score))
    return Hit(raw["_index"], raw["_id"], float(raw["_score"]), raw.get("_source"), legs)


def _reason(body: Any) -> str:
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            roots = error.get("root_cause") or []
            if roots and isinstance(roots[0], Mapping) and roots[0].get("reason"):
                return str(roots[0]["reason"])
            return str(error.get("reason") or error.get("type") or error)
        return str(error)
    return str(body)


def _api_error(exc: ApiError, leg: str, spec: SearchSpec) -> EmbedError:
    return _error_from(exc.meta.status, exc.body, leg, spec)


def _error_from(status: int, body: Any, leg: str, spec: SearchSpec) -> EmbedError:
    reason = _reason(body)
    error = body.get("error", body) if isinstance(body, Mapping) else {}
    if status == 404 or (
        isinstance(error, Mapping) and "index_not_found" in str(error.get("type"))
    ):
        return EmbedError(
            ErrorKind.NOT_FOUND,
            f"index {spec.index!r} does not exist in Elasticsearch ({reason})",
            param="index",
            code="index_not_found",
        )
    if status == 400:
        # Most likely the caller's filter (the only DSL we did not write ourselves).
        return invalid(
            f"Elasticsearch refused the {leg} request: {reason}",
            "filter" if spec.filter else None,
            code="search_rejected",
        )
    if status == 429:
        return EmbedError(
            ErrorKind.OVERLOADED,
            f"Elasticsearch is overloaded: {reason}",
            code="es_overloaded",
            retry_after=1.0,
        )
    return _unavailable(f"Elasticsearch answered {status} to the {leg} request: {reason}")


def _unreachable(exc: TransportError) -> EmbedError:
    return _unavailable(f"cannot reach Elasticsearch: {exc}")


def _unavailable(message: str) -> EmbedError:
    return EmbedError(ErrorKind.UNAVAILABLE, message, code="elasticsearch_unavailable")


def _as_query_error(exc: EmbedError) -> EmbedError:
    """The embedder names its one input ``input[0]``; to a search caller that is ``query``."""
    if exc.param is None or not exc.param.startswith("input"):
        return exc
    message = exc.message.replace(exc.param, "query", 1)
    return EmbedError(exc.kind, message, param="query", code=exc.code, retry_after=exc.retry_after)
