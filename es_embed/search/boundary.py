"""The search boundary: a caller's filter may read the searched index, and nothing else.

Elasticsearch lets some queries fetch stored objects by name while they run: a ``terms``
lookup reads a field of any document, ``geo_shape``/``shape`` with ``indexed_shape`` reads
a shape, ``more_like_this`` reads the documents it is given as ``like``/``unlike``,
``percolate`` reads a stored document, ``rule`` reads stored query rules, and ``wrapper``
hides a query in base64 where no check can see it. With the sidecar's credentials any of
them reads indices the caller was never given (and echoes their content in error messages,
or answers whether a document exists). Scripts run code on the cluster. ``check_filter``
refuses each of them, at any depth, with a 400 whose ``param`` is the clause's JSON path
(``filter.bool.must[0].terms``); scripts pass only where ``search.allow_scripts`` is set.

The walk treats every key it does not know as transparent (it looks into its value), so
compound queries (``bool``, ``nested``, ``has_child``, ``function_score``, ``knn``'s
``filter``, ``inner_hits``...) need no list of their own and a future one is still looked
into. Leaf queries whose keys are field names are not looked into, so a field called
``script`` in a ``term`` query is not mistaken for a script.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from es_embed.errors import EmbedError, invalid

# Queries that run a script, and keys that carry one inside other queries.
SCRIPT_KEYS = frozenset({"script", "script_score", "minimum_should_match_script", "_script"})
# Queries that take field names as keys: checked, never looked into.
_FIELD_KEYED = frozenset({
    "term", "match", "match_phrase", "match_phrase_prefix", "match_bool_prefix", "prefix",
    "wildcard", "regexp", "fuzzy", "range", "geo_distance", "geo_bounding_box", "geo_polygon",
    "geo_grid", "span_term", "text_expansion", "weighted_tokens", "common",
})  # fmt: skip
# Field-keyed queries whose per-field rules may hold a script.
_FIELD_KEYED_SCRIPTS = frozenset({"intervals", "terms_set"})
_NO_SCRIPTS = "runs a script, which search.allow_scripts does not allow"


def check_filter(value: Any, param: str, *, allow_scripts: bool = False) -> None:
    """Refuse lookups of stored objects and (unless allowed) scripts anywhere in ``value``."""
    _walk(value, param, allow_scripts)


def _walk(node: Any, path: str, allow_scripts: bool) -> None:
    # Depth is bounded by the JSON reader (strict_json.MAX_DEPTH), so recursion is safe.
    if isinstance(node, list):
        for i, item in enumerate(node):
            _walk(item, f"{path}[{i}]", allow_scripts)
        return
    if not isinstance(node, dict):
        return
    for key, params in node.items():
        where = f"{path}.{key}"
        if key in SCRIPT_KEYS:
            if not allow_scripts:
                raise refused(
                    where, f"{_NO_SCRIPTS}; filter on indexed fields instead", "script_not_allowed"
                )
            if isinstance(params, dict) and "query" in params:  # script_score wraps a query
                _walk(params["query"], f"{where}.query", allow_scripts)
        elif key in _CHECKS:
            _CHECKS[key](params, where)
        elif key in _FIELD_KEYED_SCRIPTS:
            if not allow_scripts:
                _field_scripts(params, where)
        elif key not in _FIELD_KEYED:
            _walk(params, where, allow_scripts)


def refused(where: str, what: str, code: str = "lookup_not_allowed") -> EmbedError:
    return invalid(f"{where} {what}", where, code=code)


def _terms(params: Any, where: str) -> None:
    if isinstance(params, dict) and any(isinstance(v, dict) for v in params.values()):
        raise refused(
            where,
            "is a terms lookup, which reads a document that could be in any "
            "index; list the terms instead",
        )


def _shape(params: Any, where: str) -> None:
    if isinstance(params, dict) and any(
        isinstance(v, dict) and "indexed_shape" in v for v in params.values()
    ):
        raise refused(
            where,
            "uses indexed_shape, which reads a shape from a document that "
            "could be in any index; send the shape itself",
        )


def _more_like_this(params: Any, where: str) -> None:
    if not isinstance(params, dict):
        return
    for key in ("like", "unlike", "docs", "ids"):
        items = params.get(key)
        if items is None:
            continue
        for item in items if isinstance(items, list) else [items]:
            if key in ("docs", "ids") or (
                isinstance(item, dict) and ("_id" in item or "_index" in item)
            ):
                raise refused(
                    where,
                    f"names stored documents in {key!r}, which could be in "
                    "any index; give their text (or an artificial doc) instead",
                )


def _percolate(params: Any, where: str) -> None:
    if isinstance(params, dict) and ("id" in params or "index" in params):
        raise refused(
            where,
            "percolates a stored document, which could be in any index; send the document itself",
        )


def _field_scripts(params: Any, where: str) -> None:
    if isinstance(params, dict):
        for field, rule in params.items():
            if _has_key(rule, SCRIPT_KEYS):
                raise refused(f"{where}.{field}", _NO_SCRIPTS, "script_not_allowed")


def _has_key(node: Any, keys: frozenset[str]) -> bool:
    if isinstance(node, dict):
        return any(k in keys or _has_key(v, keys) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_key(v, keys) for v in node)
    return False


def _always(what: str) -> Callable[[Any, str], None]:
    def check(_params: Any, where: str) -> None:
        raise refused(where, what)

    return check


_RULES = "reads stored query rules; /v1/search runs only the query it is given"
_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "terms": _terms,
    "geo_shape": _shape,
    "shape": _shape,
    "more_like_this": _more_like_this,
    "mlt": _more_like_this,
    "percolate": _percolate,
    "rule": _always(_RULES),
    "rule_query": _always(_RULES),
    "wrapper": _always(
        "hides a query in base64, where it cannot be checked; send the query itself"
    ),
}
