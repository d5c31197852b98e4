"""``POST /v1/rerank``, in the shape the Cohere (v1), Jina, vLLM and Infinity clients send.

Request: ``query`` (a string), ``documents`` (strings, or objects with a ``text`` string; an
object's other fields come back as they were sent, as Cohere does), ``model`` (the reranker's
served id; may be left out), ``top_n`` (how many results, best first; default all),
``return_documents`` (default true), and the extension ``instruction`` (Qwen3-Reranker's task,
replacing the configured one). Any other field is a 400 naming it.

Answer: ``{id, model, results: [{index, relevance_score, document?}], usage: {total_tokens,
truncated_inputs?}}``, results best first (ties in the order sent). Errors are those of
``/v1/embeddings``, from the same helpers: 400 naming the field, 404 for an unknown model or
when no reranker is configured, 413 above ``server.max_inputs`` documents, 429, 503.
A pair longer than the reranker's limit is cut at its end and counted in
``usage.truncated_inputs``, as an embedding input is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from es_embed.api.embeddings import (
    check_fields,
    check_instruction,
    check_list,
    check_model,
    check_text,
    read_json,
    type_name,
)
from es_embed.api.keys import SERVICE, SETTINGS
from es_embed.embed.protocol import RerankerInfo
from es_embed.errors import invalid, not_found

FIELDS = ("model", "query", "documents", "top_n", "return_documents", "instruction")


@dataclass(frozen=True)
class RerankRequest:
    query: str
    texts: list[str]
    documents: list[Any]  # as sent: what return_documents gives back
    top_n: int | None
    return_documents: bool
    instruction: str | None


def parse_rerank(body: Any, info: RerankerInfo | None, max_inputs: int) -> RerankRequest:
    check_fields(body, FIELDS)
    if info is None:
        asked = body.get("model")
        named = f"model {asked!r} is not served here: " if isinstance(asked, str) else ""
        message = f"{named}no reranker is configured on this server (set reranker.name)"
        raise not_found(message, "model", "model_not_found")
    check_model(body.get("model"), (info.model_id,))
    if "query" not in body:
        raise invalid("query is required: a string", "query", "missing")
    if not isinstance(body["query"], str):
        raise invalid(f"query must be a string, got {type_name(body['query'])}", "query")
    if "documents" not in body:
        raise invalid("documents is required: a list of strings", "documents", "missing")
    documents = body["documents"]
    # Whether this reranker takes an instruction at all, the service says (one message).
    instruction = check_instruction(body.get("instruction"))
    return RerankRequest(
        query=check_text(body["query"], "query"),
        texts=_texts(documents, max_inputs),
        documents=documents,
        top_n=_top_n(body.get("top_n")),
        return_documents=_flag(body.get("return_documents"), "return_documents", True),
        instruction=instruction,
    )


def _texts(documents: Any, max_inputs: int) -> list[str]:
    check_list(documents, "documents", max_inputs, "a list of strings", "one document")
    return [_text(doc, f"documents[{i}]") for i, doc in enumerate(documents)]


def _text(doc: Any, param: str) -> str:
    if isinstance(doc, dict):
        if "text" not in doc:
            raise invalid(f"{param} is an object without text", f"{param}.text", "missing")
        doc, param = doc["text"], f"{param}.text"
    if not isinstance(doc, str):
        raise invalid(
            f"{param} must be a string or an object with a text string, got {type_name(doc)}",
            param,
        )
    return check_text(doc, param)


def _top_n(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise invalid(f"top_n must be a whole number of at least 1, got {value!r}", "top_n")
    return value


def _flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false, got {type_name(value)}", name)
    return value


def ranked(scores: np.ndarray, top_n: int | None) -> list[int]:
    """Indices, best first; equal scores keep the order they were sent in."""
    order = np.argsort(-scores, kind="stable")
    return [int(i) for i in order[:top_n]]


def _document(doc: Any) -> dict[str, Any]:
    return dict(doc) if isinstance(doc, dict) else {"text": doc}


async def post_rerank(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    service = request.app[SERVICE]
    info = service.reranker_info
    req = parse_rerank(await read_json(request), info, settings.server.max_inputs)
    assert info is not None  # parse_rerank answered 404 otherwise
    result = await service.rerank(req.query, req.texts, req.instruction)
    results = []
    for i in ranked(result.scores, req.top_n):
        item: dict[str, Any] = {"index": i, "relevance_score": float(result.scores[i])}
        if req.return_documents:
            item["document"] = _document(req.documents[i])
        results.append(item)
    usage = {"total_tokens": result.total_tokens}
    if result.truncated:
        usage["truncated_inputs"] = result.truncated
    return web.json_response(
        {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": info.model_id,
            "results": results,
            "usage": usage,
        }
    )
