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

from es_embed.errors import EmbedError, ErrorKind
from es_embed.indices.resolve import IndexTarget
from es_embed.search import fusion, rerank
from es_embed.search.builders import Plan, msearch_lines, plan, text_body
from es_embed.search.fusion import Hit, Key, LegHit, LegScore
from es_embed.search.passages import PassageHit, PassageRead, from_inner_hits, with_text
from es_embed.search.refusal import error_from, foreign, reason, unreachable, withheld
from es_embed.search.rerank import RerankStage
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
    rerank_ms: float | None = None  # the rerank stage (text fetch included); None: no rerank

    def to_json(self) -> dict[str, Any]:
        answer = {
            "hits": [h.to_json() for h in self.hits],
            "took_ms": round(self.took_ms, 3),
            "embed_ms": round(self.embed_ms, 3),
        }
        if self.rerank_ms is not None:
            answer["rerank_ms"] = round(self.rerank_ms, 3)
        return answer


class Searcher:
    """Searches the configured indices; one per process (it caches the native probe).

    ``es`` runs the searches: ideally a client whose API key may only read the configured
    indices, so Elasticsearch itself holds the boundary. ``meta_es`` (default ``es``) reads
    the licence for native fusion, which such a key may not. ``allow_scripts`` is the
    ``search.allow_scripts`` setting, for the front ends that parse requests. ``rerank``
    (None: no reranker here) rescores the top of the ranked list when a search asks.
    """

    def __init__(
        self,
        es: AsyncElasticsearch,
        embed_query: QueryEmbedder,
        indices: Iterable[IndexTarget],
        *,
        meta_es: AsyncElasticsearch | None = None,
        allow_scripts: bool = False,
        rerank: RerankStage | None = None,
    ) -> None:
        self._es = es
        self.reranker = rerank
        self._meta_es = meta_es or es
        self._embed_query = embed_query
        self._indices = {conf.name: conf for conf in indices}
        self._native: dict[str, tuple[float, str | None]] = {}
        self.allow_scripts = allow_scripts

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
        if spec.rerank is not None and self.reranker is None:
            raise EmbedError(
                ErrorKind.UNPROCESSABLE,
                "rerank needs a reranker, and none is configured on this server "
                "(set reranker.name)",
                param="rerank",
                code="reranker_not_configured",
            )
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
        hits, rerank_ms = await self._answer(p, spec)
        return SearchResult(hits, (time.perf_counter() - start) * 1000, embed_ms, p, rerank_ms)

    async def run(self, p: Plan, spec: SearchSpec) -> list[Hit]:
        """The page of hits that ``p`` answers (reranked when it says so)."""
        hits, _ = await self._answer(p, spec)
        return hits

    async def _answer(self, p: Plan, spec: SearchSpec) -> tuple[list[Hit], float | None]:
        """The page, and the rerank stage's milliseconds (None when there is none)."""
        hits = await self.ranked(p, spec)
        rerank_ms = None
        if p.rerank is not None:
            start = time.perf_counter()
            hits = await self._reranked(hits, p, spec)
            rerank_ms = (time.perf_counter() - start) * 1000
        if p.pages_here:
            hits = fusion.page(hits, spec.from_, spec.k)
        if p.passages is not None:  # after the rerank, which may read the widened _source
            _cut_passages(hits, p.passages)
        return hits, rerank_ms

    async def ranked(self, p: Plan, spec: SearchSpec) -> list[Hit]:
        """Elasticsearch's part: the fused window, or one search's hits (a page unless the
        plan ``pages_here``)."""
        if p.fuse:
            legs = await self._msearch(p, spec)
            if spec.fusion == "auto":
                return fusion.auto(
                    legs, weights=spec.weights, zero=self._zero(spec.index), window=spec.window
                )
            if spec.fusion == "linear":
                return fusion.linear(legs, weights=spec.weights, window=spec.window)
            return fusion.rrf(legs, rank_constant=spec.rank_constant, window=spec.window)
        (leg,) = p.requests
        try:
            resp = await self._es.search(
                index=p.index,
                body=leg.body,
                include_named_queries_score=True if p.named_scores else None,
            )
        except ApiError as exc:
            raise await self._refusal(exc.meta.status, exc.body, leg.name, spec) from None
        except TransportError as exc:
            raise unreachable(exc) from None
        raw_hits = resp["hits"]["hits"]
        if leg.name in ("bm25", "knn"):
            offset = 0 if p.pages_here else spec.from_
            return fusion.single(leg.name, _leg_hits(raw_hits, p.passages), offset=offset)
        return [_scored_hit(h, p) for h in raw_hits]

    def _zero(self, index: str) -> dict[str, float]:
        """Each leg's score for a document with no evidence (auto fusion measures from it)."""
        return {"bm25": 0.0, "knn": fusion.ZERO_EVIDENCE[self.index_settings(index).similarity]}

    async def _reranked(self, hits: list[Hit], p: Plan, spec: SearchSpec) -> list[Hit]:
        """The sidecar's part: the top ``p.rerank`` hits by the reranker's scores."""
        if self.reranker is None or p.rerank is None:
            raise AssertionError("prepare() refuses rerank without a reranker")
        top = hits[: p.rerank]
        if not top:
            return hits
        # Passages read for the answer widened _source to the text fields (unless excluded).
        in_hits = p.text_in_source or (p.passages is not None and not p.passages.no_text)
        sources = None if in_hits else await self._texts(top, p, spec)
        if p.rerank_passages is None:
            texts = rerank.texts(top, p.text_fields, sources)
        else:
            missing = [h for h in top if not h.passages]
            found = await self._best_passages(missing, p, spec) if missing else {}
            texts = rerank.passage_texts(top, p.text_fields, sources, found)
        scores = await self.reranker.score(spec.query, texts)
        return rerank.reorder(hits, scores)

    async def _texts(self, top: list[Hit], p: Plan, spec: SearchSpec) -> dict[Key, Any]:
        """The text fields of ``top`` when the caller's source filter left them out."""
        body = text_body([(h.index, h.id) for h in top], p.text_fields)
        raw = await self._rerank_search(p, body, spec)
        return {(h["_index"], h["_id"]): h.get("_source") for h in raw}

    async def _best_passages(
        self, hits: list[Hit], p: Plan, spec: SearchSpec
    ) -> dict[Key, tuple[PassageHit | None, Any]]:
        """The passage the kNN leg would pick for hits that came without one (BM25 alone),
        by one nested kNN search restricted to them; bm25 alone embeds the query for it."""
        field = p.rerank_passages
        if field is None:
            raise AssertionError("only a passages index reads passages")
        vector = rerank.plan_vector(p)
        if vector is None:
            try:
                raw = await self._embed_query(spec.query, self.index_settings(spec.index).dims)
            except EmbedError as exc:
                raise _as_query_error(exc) from None
            vector = np.asarray(raw, dtype=np.float32).tolist()
        keys = [(h.index, h.id) for h in hits]
        body = rerank.best_passage_body(keys, field, vector, p.text_fields)
        return rerank.best_passages(await self._rerank_search(p, body, spec), field,
                                    p.text_fields)  # fmt: skip

    async def _rerank_search(self, p: Plan, body: Any, spec: SearchSpec) -> list[Any]:
        """One search the rerank stage needs besides the plan's; its hits."""
        try:
            resp = await self._es.search(index=p.index, body=body)
        except ApiError as exc:
            raise await self._refusal(exc.meta.status, exc.body, "rerank", spec) from None
        except TransportError as exc:
            raise unreachable(exc) from None
        hits: list[Any] = resp["hits"]["hits"]
        return hits

    async def _msearch(self, p: Plan, spec: SearchSpec) -> dict[str, list[LegHit]]:
        try:
            resp = await self._es.msearch(searches=msearch_lines(p))
        except ApiError as exc:
            raise await self._refusal(exc.meta.status, exc.body, "hybrid", spec) from None
        except TransportError as exc:
            raise unreachable(exc) from None
        legs: dict[str, list[LegHit]] = {}
        for leg, item in zip(p.requests, resp["responses"], strict=True):
            if "error" in item:
                status = item.get("status", 500)
                raise await self._refusal(status, item["error"], leg.name, spec)
            legs[leg.name] = _leg_hits(item["hits"]["hits"], p.passages)
        return legs

    async def _refusal(self, status: int, body: Any, leg: str, spec: SearchSpec) -> EmbedError:
        """Elasticsearch's reason, unless it names an index the caller was not given."""
        if foreign(body, spec.index) and foreign(body, spec.index, await self._behind(spec.index)):
            return withheld(leg, spec)
        return error_from(status, body, leg, spec)

    async def _behind(self, name: str) -> set[str]:
        """The concrete indices of a configured name (only asked when a refusal names one)."""
        try:
            resolved = await self._es.indices.resolve_index(name=name)
        except (ApiError, TransportError):
            return set()  # cannot tell: every other name stays foreign
        names = {i["name"] for i in resolved.get("indices", [])}
        for alias in resolved.get("aliases", []):
            names.update(alias.get("indices", []))
        for stream in resolved.get("data_streams", []):
            names.update(stream.get("backing_indices", []))
        return names

    async def require_native(self, index: str, kind: str) -> None:
        """Refuse native fusion clearly unless the licence has it and a probe succeeds."""
        cached = self._native.get(kind)
        if cached is not None and time.monotonic() - cached[0] < NATIVE_CACHE_SECONDS:
            why = cached[1]
        else:
            why = await native_unavailable(self._meta_es, index, kind)
            self._native[kind] = (time.monotonic(), why)
        if why is not None:
            raise EmbedError(
                ErrorKind.UNPROCESSABLE,
                f"fusion native_{kind} is not available on this cluster: {why}; "
                f"use fusion {kind} (client-side, any licence)",
                param="fusion",
                code="native_fusion_unavailable",
            )


async def native_unavailable(es: AsyncElasticsearch, index: str, kind: str) -> str | None:
    """Why the ``kind`` retriever cannot run here, or None when it can (licence + probe)."""
    try:
        licence = (await es.license.get())["license"]
    except ApiError as exc:
        return f"GET _license failed ({exc.meta.status}: {reason(exc.body)})"
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
        return f"the probe answered {exc.meta.status}: {reason(exc.body)}"
    return None


def _leg_hits(raw_hits: list[dict[str, Any]], read: PassageRead | None) -> list[LegHit]:
    return [
        LegHit(
            h["_index"], h["_id"], float(h["_score"]), h.get("_source"), _inner(h, read)
        )  # fmt: skip
        for h in raw_hits
    ]


def _inner(raw: Mapping[str, Any], read: PassageRead | None) -> Any:
    """A hit's passages, or None where its search asked for none (so bm25 hits have none)."""
    if read is None or "inner_hits" not in raw:
        return None
    return from_inner_hits(raw, read)


def _scored_hit(raw: Mapping[str, Any], p: Plan) -> Hit:
    legs: dict[str, LegScore] = {}
    if p.named_scores:
        # sum: one ranking, so legs have no rank; matched_queries holds each boosted part.
        for name, score in (raw.get("matched_queries") or {}).items():
            legs[name] = LegScore(None, float(score), float(score))
    source = raw.get("_source")
    return Hit(raw["_index"], raw["_id"], float(raw["_score"]), source, legs,
               _inner(raw, p.passages))  # fmt: skip


def _cut_passages(hits: list[Hit], read: PassageRead) -> None:
    """Each hit's passages with their text; a hit that only BM25 found has none ([])."""
    for hit in hits:
        hit.passages, hit.source = with_text(hit.passages or (), hit.source, read)


def _as_query_error(exc: EmbedError) -> EmbedError:
    """The embedder names its one input ``input[0]``; to a search caller that is ``query``."""
    if exc.param is None or not exc.param.startswith("input"):
        return exc
    message = exc.message.replace(exc.param, "query", 1)
    return EmbedError(exc.kind, message, param="query", code=exc.code, retry_after=exc.retry_after)
