"""``es-embed search "text" --index NAME [--mode ...] [--json] [--explain] [--dev-console]``.

The query is embedded in-process with the configured model (loaded only for modes that
need a vector), or by a running sidecar with ``--server URL`` (its ``/v1/embeddings``,
``input_type: query``), which skips loading the model. ``--rerank N`` reranks the top N
with the configured reranker (in-process: the embedding model is loaded with it, even for
bm25, as the service hosts both) or the sidecar's (``/v1/rerank``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from es_embed import strict_json
from es_embed.api.search import rerank_stage
from es_embed.cli.runtime import es_client, report, run_command
from es_embed.config import ConfigError, Settings, api_keys, load_settings
from es_embed.embed.shape import ModelShape
from es_embed.embed.startup import embedding_service
from es_embed.errors import EmbedError, ErrorKind, invalid
from es_embed.indices.resolve import resolve_all, text_only
from es_embed.search.devconsole import render
from es_embed.search.execute import QueryEmbedder, Searcher, SearchResult
from es_embed.search.fusion import AUTO, Hit
from es_embed.search.rerank import RerankStage
from es_embed.search.spec import DEFAULT_FUSION, FUSIONS, MODES, SearchSpec, spec_from_json

SNIPPET = 80
PASSAGE_CHARS = 240


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "search",
        help="hybrid BM25 + kNN search of a configured index",
        description="Search a configured index by words (bm25), by meaning (knn) or both "
        "(hybrid, fused client-side by relative evidence (auto, the default), RRF or min-max "
        "linear, or by Elasticsearch).",
    )
    p.add_argument("query", help="the query text")
    p.add_argument("--index", required=True, metavar="NAME", help="a configured index")
    p.add_argument("--config", metavar="FILE", help="YAML settings file")
    p.add_argument("--mode", choices=MODES, default="hybrid")
    p.add_argument(
        "--fusion", choices=FUSIONS, default=DEFAULT_FUSION, help="hybrid only (default auto)"
    )
    p.add_argument("--k", type=int, default=10, help="hits per page (default 10)")
    p.add_argument("--from", type=int, default=0, dest="from_", help="page offset")
    p.add_argument("--window", type=int, default=100, help="hits per leg that are fused")
    p.add_argument("--rank-constant", type=int, default=60, help="RRF rank constant")
    p.add_argument("--num-candidates", type=int, help="kNN candidates (default max(100, 2k))")
    p.add_argument("--filter", metavar="JSON", help="query DSL object applied to both legs")
    p.add_argument("--weights", metavar="bm25=W,knn=W", help="linear / sum weights")
    p.add_argument("--source", metavar="FIELDS", help="comma-separated fields, or 'false'")
    p.add_argument(
        "--passages", type=int, default=3, help="best passages per hit (passage indices)"
    )
    p.add_argument("--rerank", type=int, metavar="N", help="rerank the top N with the reranker")
    p.add_argument("--server", metavar="URL", help="embed the query with this running sidecar")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the API's JSON answer")
    out.add_argument(
        "--dev-console",
        action="store_true",
        help="print the request(s) as Kibana Dev Tools text instead of running them",
    )
    p.add_argument("--explain", action="store_true", help="show each leg's part of the score")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        spec = spec_from_args(args, allow_scripts=settings.search.allow_scripts)
        settings.index(spec.index)
        if spec.rerank is not None and not args.server and not settings.reranker.name:
            raise invalid(
                "--rerank needs a reranker: set reranker.name (or use --server)", "rerank"
            )
    except (ConfigError, EmbedError) as exc:
        return report(exc)
    return run_command(_run(settings, spec, args), settings)


def spec_from_args(args: argparse.Namespace, *, allow_scripts: bool = False) -> SearchSpec:
    raw: dict[str, Any] = {
        "index": args.index,
        "query": args.query,
        "mode": args.mode,
        "fusion": args.fusion,
        "k": args.k,
        "from": args.from_,
        "window": args.window,
        "rank_constant": args.rank_constant,
        "passages": args.passages,
    }
    if args.num_candidates is not None:
        raw["num_candidates"] = args.num_candidates
    if args.rerank is not None:
        raw["rerank"] = {"window": args.rerank}
    if args.filter:
        # The API's bounded reader: no traceback for deep nesting, huge numbers or NaN.
        raw["filter"] = strict_json.parse(args.filter, "--filter")
    if args.weights:
        raw["weights"] = _weights(args.weights)
    if args.source:
        raw["source"] = False if args.source == "false" else args.source.split(",")
    return spec_from_json(raw, allow_scripts=allow_scripts)


def _weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise invalid(f"--weights: expected bm25=W,knn=W, got {text!r}", "weights") from None
    return out


async def _run(settings: Settings, spec: SearchSpec, args: argparse.Namespace) -> int:
    async with (
        es_client(settings) as es,
        _embedder(settings, spec, args.server) as (embed, model, stage),
    ):
        targets = (
            resolve_all(settings.indices, model)
            if model is not None
            else [text_only(conf, settings.model.model_id) for conf in settings.indices]
        )
        searcher = Searcher(es, embed, targets, rerank=stage)
        if args.dev_console:
            p, _ = await searcher.prepare(spec)
            print(render(p, spec, stage.model if stage else None))
            return 0
        result = await searcher.search(spec)
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
    else:
        print(format_result(result, spec, explain=args.explain))
    return 0


Models = tuple[QueryEmbedder, ModelShape | None, RerankStage | None]


@contextlib.asynccontextmanager
async def _embedder(
    settings: Settings, spec: SearchSpec, server: str | None
) -> AsyncIterator[Models]:
    """The query embedder, the model's shape (None: BM25 alone needs no model) and the
    rerank stage (None: not asked for)."""
    reranks = spec.rerank is not None
    if server:
        async with contextlib.AsyncExitStack() as stack:
            embed: QueryEmbedder = _no_vectors
            shape = None
            # A reranked search may embed the query to find a passages index's best passages.
            if spec.needs_vector or reranks:
                embed, shape = await stack.enter_async_context(_server_embedder(settings, server))
            stage = (
                await stack.enter_async_context(_server_reranker(settings, server))
                if reranks
                else None
            )
            yield embed, shape, stage
    elif spec.needs_vector or reranks:
        async with embedding_service(settings, with_reranker=reranks) as service:
            yield service.embed_query, service.info.shape, rerank_stage(service)
    else:
        yield _no_vectors, None, None


async def _no_vectors(text: str, dims: int | None) -> np.ndarray:
    raise AssertionError("bm25 needs no query vector")


@contextlib.asynccontextmanager
async def _server_embedder(
    settings: Settings, url: str
) -> AsyncIterator[tuple[QueryEmbedder, ModelShape]]:
    endpoint = url.rstrip("/") + "/v1/embeddings"
    async with _session(settings) as session:
        model = await _served_shape(session, url.rstrip("/") + "/v1/models", settings)

        async def embed(text: str, dims: int | None) -> np.ndarray:
            body: dict[str, Any] = {
                "input": text,
                "model": settings.model.model_id,
                "input_type": "query",
            }
            if dims:
                body["dimensions"] = dims
            answer = await _post(session, endpoint, body)
            return np.asarray(answer["data"][0]["embedding"], dtype=np.float32)

        yield embed, model


@contextlib.asynccontextmanager
async def _server_reranker(settings: Settings, url: str) -> AsyncIterator[RerankStage]:
    """The sidecar's reranker (``/v1/rerank``); its id from ``/v1/models``."""
    endpoint = url.rstrip("/") + "/v1/rerank"
    async with _session(settings) as session:
        served = (await _post(session, url.rstrip("/") + "/v1/models")).get("data", [])
        ids = [m["id"] for m in served if isinstance(m, dict) and m.get("task") == "rerank"]
        if not ids:
            raise invalid(f"--rerank: the sidecar at {url} serves no reranker", "rerank")

        async def score(query: str, documents: Sequence[str]) -> np.ndarray:
            body = {"model": ids[0], "query": query, "documents": list(documents),
                    "return_documents": False}  # fmt: skip
            answer = await _post(session, endpoint, body)
            scores = np.zeros(len(documents), dtype=np.float32)
            for result in answer["results"]:
                scores[result["index"]] = result["relevance_score"]
            return scores

        yield RerankStage(ids[0], score)


def _session(settings: Settings) -> Any:
    import aiohttp  # the CLI may use HTTP; search itself never does

    keys = sorted(api_keys(settings.server))
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    return aiohttp.ClientSession(headers=headers)


async def _post(session: Any, url: str, body: dict[str, Any] | None = None) -> Any:
    """The sidecar's JSON answer (a GET without ``body``); any refusal or failure is
    UNAVAILABLE with the sidecar's message."""
    import aiohttp

    try:
        async with session.request("GET" if body is None else "POST", url, json=body) as resp:
            answer = await resp.json(content_type=None)
            if resp.status != 200:
                error = answer.get("error") if isinstance(answer, dict) else None
                message = error.get("message", answer) if isinstance(error, dict) else answer
                raise EmbedError(
                    ErrorKind.UNAVAILABLE,
                    f"{url} answered {resp.status}: {message}",
                    code="embedding_server_error",
                )
    except aiohttp.ClientError as exc:
        raise EmbedError(ErrorKind.UNAVAILABLE, f"cannot reach {url}: {exc}") from None
    return answer


async def _served_shape(session: Any, url: str, settings: Settings) -> ModelShape:
    """The sidecar's own account of its model (``/v1/models``), so dims resolve as it would."""
    served = (await _post(session, url))["data"][0]
    declared = served.get("matryoshka_dims")
    return ModelShape(
        settings.model.model_id,
        int(served["dimensions"]),
        bool(served.get("matryoshka", False)),
        tuple(declared) if declared else None,
    )


def format_result(result: SearchResult, spec: SearchSpec, explain: bool = False) -> str:
    lines = [
        f"{len(result.hits)} hits  ({spec.mode}"
        + (f", {spec.fusion}" if spec.mode == "hybrid" else "")
        + f"; {result.took_ms:.1f} ms, embedding {result.embed_ms:.1f} ms)"
    ]
    for rank, hit in enumerate(result.hits, start=spec.from_ + 1):
        names = ("bm25", "knn", "rerank") if "rerank" in hit.legs else ("bm25", "knn")
        legs = "  ".join(_leg_text(name, hit) for name in names)
        lines.append(f"{rank:>3}. {hit.score:<10.5g} {hit.id}  [{legs}]")
        snippet = _snippet(hit.source)
        if snippet:
            lines.append(f"     {snippet}")
        if hit.passages:  # the best passage: what answers, in a long document
            best = hit.passages[0]
            text = _short(best.text or "", PASSAGE_CHARS)
            lines.append(f"     > [{best.start}:{best.end}] {best.score:.4g}  {text}")
        if explain:
            lines.extend(f"     {line}" for line in explain_hit(hit, spec))
    return "\n".join(lines)


def _leg_text(name: str, hit: Hit) -> str:
    leg = hit.legs.get(name)
    if leg is None:
        return f"{name} -"
    rank = f"#{leg.rank} " if leg.rank is not None else ""
    return f"{name} {rank}{leg.score:.4g}"


def explain_hit(hit: Hit, spec: SearchSpec) -> list[str]:
    """How this hit's score was made, leg by leg, in the terms of the fusion formula."""
    if spec.mode != "hybrid":
        return [f"{spec.mode} score {hit.score:.6g} (Elasticsearch's own)", *_rerank_line(hit)]
    if spec.fusion.startswith("native_"):
        retriever = spec.fusion.removeprefix("native_")
        own = f"score {hit.score:.6g} from Elasticsearch's {retriever} retriever"
        return [own, *_rerank_line(hit)]
    out = []
    for name in ("bm25", "knn"):
        leg = hit.legs.get(name)
        part = 0.0 if leg is None or leg.contribution is None else leg.contribution
        if leg is None:
            out.append(f"{name}: not in the leg's first {spec.window} hits -> 0")
        elif spec.fusion == "rrf":
            out.append(
                f"{name}: rank {leg.rank} (score {leg.score:.6g}) -> "
                f"1/({spec.rank_constant}+{leg.rank}) = {part:.6g}"
            )
        elif spec.fusion == "auto":
            w = spec.weights[name] * (AUTO.knn_weight if name == "knn" else 1.0)
            out.append(
                f"{name}: rank {leg.rank}, score {leg.score:.6g}, evidence above the leg's floor "
                f"{(part / w if w else 0.0):.4f} x weight {w:g} = {part:.6g}"
            )
        elif spec.fusion == "linear":
            w = spec.weights[name]
            out.append(
                f"{name}: rank {leg.rank}, score {leg.score:.6g}, min-max "
                f"{(part / w if w else 0.0):.4f} x weight {w:g} = {part:.6g}"
            )
        else:
            out.append(f"{name}: boosted score {part:.6g}")
    out.append(f"total {hit.score:.6g}")
    return out + _rerank_line(hit)


def _rerank_line(hit: Hit) -> list[str]:
    leg = hit.legs.get("rerank")
    if leg is None:
        return []
    return [f"then reranked: rank {leg.rank} by the reranker's score {leg.score:.6g}"]


def _snippet(source: Any) -> str:
    if not isinstance(source, dict):
        return ""
    parts = [str(v) for v in source.values() if isinstance(v, str) and v.strip()]
    return _short(" | ".join(parts), SNIPPET)


def _short(text: str, limit: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
