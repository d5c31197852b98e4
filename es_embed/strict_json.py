"""JSON from clients, parsed with bounds: every refusal is an ``invalid`` error naming the field.

Python's ``json`` accepts what no handler can use and fails in ways that are not a
``JSONDecodeError``: ``NaN``/``Infinity`` literals and ``1e999`` (non-finite floats that
would come back out as invalid JSON), integers of thousands of digits (``ValueError`` past
Python's 4,300-digit conversion limit, and quadratic work below it), nesting deep enough
for a ``RecursionError``, and lone surrogates (``"\\ud800"``) that no UTF-8 encoder takes.
``parse`` refuses each of them with a 400 whose ``param`` is the JSON path of the value
(``input[3]``, ``weights.bm25``, ``filter.bool.must[0].range.n.gte``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from es_embed.errors import EmbedError, invalid, valid_unicode

# Deeper than any request needs (a query DSL filter of 30 nested bool clauses is ~90 levels),
# far below where a recursive walk of the value could run out of stack.
MAX_DEPTH = 128
# An unsigned 64-bit integer has 20 digits; nothing in the API or in Elasticsearch takes more.
MAX_INT_DIGITS = 20

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class _Refused:
    """Stands in for a number the parse hooks refuse, so the check can name its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_int(text: str) -> Any:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Refused(f"is an integer of {digits:,} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> Any:
    value = float(text)
    if not math.isfinite(value):
        return _Refused(f"is a number out of range ({text[:40]})")
    return value


def _parse_constant(name: str) -> Any:
    return _Refused(f"is {name}, which is not a JSON number")


def parse(text: str, root: str | None = None) -> Any:
    """Decode ``text``; ``root`` names the value in errors (None: the request body)."""
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as exc:
        what = f"{root} is" if root else "the request body is"
        raise invalid(
            f"{what} not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            root,
            code="invalid_json",
        ) from None
    except RecursionError:
        raise _too_deep(_deep_key(text, root), root) from None
    check(value, root)
    return value


def check(value: Any, root: str | None = None) -> None:
    """Refuse a value nested past ``MAX_DEPTH``, a refused number or a lone surrogate.

    Iterative, so a value built by any means (not only by ``parse``) is checked safely.
    """
    stack: list[tuple[Any, str | None, str | None, int]] = [(value, root, root, 0)]
    while stack:
        node, path, top, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep(top, root)
        if isinstance(node, str):
            valid_unicode(node, path or "the request body")
        elif isinstance(node, _Refused):
            raise invalid(f"{path or 'the request body'} {node.reason}", path)
        elif isinstance(node, dict):
            for key, item in node.items():
                name = _printable(key)
                child = f"{path}.{name}" if path else name
                if name != key:
                    raise invalid(f"{child}: a field name contains a lone surrogate", child)
                stack.append((item, child, top if depth else child, depth + 1))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                child = f"{path or ''}[{i}]"
                stack.append((item, child, top if depth else child, depth + 1))


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _too_deep(field: str | None, root: str | None) -> EmbedError:
    what = field or root or "the request body"
    return invalid(f"{what} is nested more than {MAX_DEPTH} levels deep", field or root)


def _deep_key(text: str, root: str | None) -> str | None:
    """The top-level field whose value nests too deep (the last key before the deep value),
    found by a scan of the raw text: the parser gave up before it could say."""
    if not text.lstrip().startswith("{"):
        return root  # an array or a scalar at the top has no field names
    depth = 0
    key: str | None = None
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                break
        elif token in ("]", "}"):
            depth -= 1
        elif depth == 1:
            key = token  # keys and string values alternate; the deep value's key is last
    if key is None:
        return root
    try:
        name = _printable(json.loads(key))
    except ValueError:
        return root
    return f"{root}.{name}" if root else name
