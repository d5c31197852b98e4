"""A followed document: the text it is embedded from, the content hash stored next to its
vector, and the partial document that writes both back.

    hash = sha256_hex(f"{model}\\u001f{dims}\\u001f{text}")

where ``text`` is the configured text fields joined in order with a newline. The hash is
of the exact string the model sees (plus model and dimension), so "same hash" means
"same vector": moving words between title and body without changing the joined text
needs no new vector. It is one SHA-256 over one string on purpose: Painless can
recompute it with ``String.sha256()``, so the optional ingest pipeline (see
``pipeline.py``) can tell a stale vector from a fresh one with the same rule.

Field values: a string counts unless it is blank (every character <= U+0020, the rule of
Java's ``String.trim()``, so Python and Painless agree); a list contributes
its non-blank strings in order; numbers, booleans, objects and nulls are ignored (their
string forms differ between Python and Painless, and they are rarely prose).
A field name with dots is looked up as nested objects, falling back to a literal
dotted key (both shapes occur in ``_source``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from es_embed.errors import EmbedError, valid_unicode

SEPARATOR = "\u001f"  # unit separator: cannot be confused with text or a number
FIELD_JOINER = "\n"


def hash_prefix(model: str, dims: int) -> str:
    return f"{model}{SEPARATOR}{dims}{SEPARATOR}"


def content_hash(model: str, dims: int, text: str) -> str:
    """Raises ``UnicodeEncodeError`` for a lone surrogate: JSON can carry ``"\\ud800"`` into
    ``_source``, but it is not text (no UTF-8, no tokens); ``unencodable_reason`` names it."""
    return hashlib.sha256((hash_prefix(model, dims) + text).encode("utf-8")).hexdigest()


def field_value(source: Mapping[str, Any], path: str) -> Any:
    """``a.b`` as nested objects, or as a literal dotted key."""
    if path in source:
        return source[path]
    node: Any = source
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def is_blank(text: str) -> bool:
    return all(ch <= " " for ch in text)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [] if is_blank(value) else [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and not is_blank(v)]
    return []


def document_text(source: Mapping[str, Any], fields: Sequence[str]) -> str:
    """The text to embed; "" when every field is missing or blank (such documents are skipped)."""
    parts: list[str] = []
    for name in fields:
        parts.extend(_strings(field_value(source, name)))
    return FIELD_JOINER.join(parts)


def unencodable_reason(source: Mapping[str, Any], fields: Sequence[str]) -> str:
    """Why the text of ``source`` cannot be hashed or embedded, naming the field."""
    for name in fields:
        for value in _strings(field_value(source, name)):
            try:
                valid_unicode(value, name)
            except EmbedError as exc:
                return exc.message
    return "the text is not valid Unicode"


def stored_hash(source: Mapping[str, Any]) -> str | None:
    embed = source.get("_embed")
    if isinstance(embed, Mapping):
        value = embed.get("hash")
        return value if isinstance(value, str) else None
    value = source.get("_embed.hash")
    return value if isinstance(value, str) else None


VECTOR_DECIMALS = 8  # float32 keeps ~7 significant digits; 8 decimals halve the JSON size


def deep_merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``b`` into ``a`` in place, recursing into objects present in both."""
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(a.get(k), dict):
            deep_merge(a[k], v)
        else:
            a[k] = v
    return a


def nested(path: str, value: Any) -> dict[str, Any]:
    """``a.b`` -> {"a": {"b": value}}: a partial update merges objects, not dotted keys."""
    out: dict[str, Any] = {}
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def vector_doc(
    vector_field: str, model: str, dims: int, vector: np.ndarray | None, digest: str | None
) -> dict[str, Any]:
    """The partial document written back: the vector and its ``_embed`` record (or nulls)."""
    if vector is None:
        return deep_merge(nested(vector_field, None), {"_embed": None})
    values = np.round(vector.astype(np.float64), VECTOR_DECIMALS).tolist()
    embed = {
        "hash": digest,
        "model": model,
        "dims": dims,
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    return deep_merge(nested(vector_field, values), {"_embed": embed})
