"""Elasticsearch's refusals of a search, as ``EmbedError`` kinds the API and CLI can answer.

A refusal's text is passed on to the caller (it is usually the best explanation of a bad
filter) only when every index it names is the searched one, or an index behind it (an
alias member, a data stream's backing index). An error that names another index (a lookup
that got past the boundary check, a refused cross-index read) becomes a generic 400 whose
wording and status are the same whether that index or document exists, so it answers no
question about data the caller was not given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from elasticsearch import TransportError

from es_embed.errors import EmbedError, ErrorKind, invalid
from es_embed.search.spec import SearchSpec

# How Elasticsearch names indices in its reasons: "no such index [x]", "on indices [x, y]",
# "[x] index", "index [x]"; and the structured "index" / "resource.id" of index errors.
_NAMED = re.compile(r"\b(?:index|indices)\s*\[([^\]]*)\]|\[([^\]\s]+)\]\s*index\b", re.I)
_INDEX_RESOURCES = ("index_or_alias", "index_expression", "index")


def mentioned_indices(body: Any) -> set[str]:
    """Every index name a refusal mentions, from its structured fields and its reasons."""
    names: set[str] = set()
    stack = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key == "index" and isinstance(value, str):
                    names.add(value)
                elif key == "resource.id" and node.get("resource.type") in _INDEX_RESOURCES:
                    names.update(_split(value))
                elif isinstance(value, str):
                    names.update(_named_in(value))
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            names.update(_named_in(node))
    return names


def _named_in(text: str) -> set[str]:
    names: set[str] = set()
    for match in _NAMED.finditer(text):
        names.update(_split(match.group(1) or match.group(2)))
    return names


def _split(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value).split(",")
    return [str(v).strip() for v in items if str(v).strip()]


def foreign(body: Any, searched: str, behind: Iterable[str] = ()) -> set[str]:
    """The names in a refusal that are neither ``searched`` nor an index ``behind`` it."""
    return mentioned_indices(body) - {searched, *behind}


def withheld(leg: str, spec: SearchSpec) -> EmbedError:
    return invalid(
        f"Elasticsearch refused the {leg} request; its reason names an index other than "
        f"{spec.index!r}, so it is not shown (a filter may read only the searched index)",
        "filter" if spec.filter else None,
        code="search_rejected",
    )


def reason(body: Any) -> str:
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            roots = error.get("root_cause") or []
            if roots and isinstance(roots[0], Mapping) and roots[0].get("reason"):
                return str(roots[0]["reason"])
            return str(error.get("reason") or error.get("type") or error)
        return str(error)
    return str(body)


def error_from(status: int, body: Any, leg: str, spec: SearchSpec) -> EmbedError:
    """The refusal as an error kind; call only after ``foreign`` found nothing."""
    text = reason(body)
    error = body.get("error", body) if isinstance(body, Mapping) else {}
    if status == 404 or (
        isinstance(error, Mapping) and "index_not_found" in str(error.get("type"))
    ):
        return EmbedError(
            ErrorKind.NOT_FOUND,
            f"index {spec.index!r} does not exist in Elasticsearch ({text})",
            param="index",
            code="index_not_found",
        )
    if status == 400:
        # Most likely the caller's filter (the only DSL we did not write ourselves).
        return invalid(
            f"Elasticsearch refused the {leg} request: {text}",
            "filter" if spec.filter else None,
            code="search_rejected",
        )
    if status == 429:
        return EmbedError(
            ErrorKind.OVERLOADED,
            f"Elasticsearch is overloaded: {text}",
            code="es_overloaded",
            retry_after=1.0,
        )
    return unavailable(f"Elasticsearch answered {status} to the {leg} request: {text}")


def unreachable(exc: TransportError) -> EmbedError:
    return unavailable(f"cannot reach Elasticsearch: {exc}")


def unavailable(message: str) -> EmbedError:
    return EmbedError(ErrorKind.UNAVAILABLE, message, code="elasticsearch_unavailable")
