"""A followed document: the text it is embedded from, the content hash stored next to its
vector, and the partial document that writes both back.

    hash = sha256_hex(f"{model}\\u001f{dims}\\u001f{text}")
    hash = sha256_hex(f"{model}\\u001f{dims}\\u001fpassages {max} {overlap}\\u001f{text}")

(the second for an index embedded passage by passage, so changing ``max_tokens`` or
``overlap_tokens`` re-embeds), where ``text`` is the configured text fields joined in order
with a newline. The hash is of the exact string the model sees (plus model, dimension and
passage settings), so "same hash" means "same vectors": moving words between title and
body without changing the joined text needs no new vector (for passages, whose title is
their context, such a move keeps the older context until the text itself changes).
It is one SHA-256 over one string on purpose: Painless can recompute it with
``String.sha256()``, so the optional ingest pipeline (see ``pipeline.py``) can tell a
stale vector from a fresh one with the same rule.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from es_embed.errors import EmbedError, valid_unicode

SEPARATOR = "\u001f"  # unit separator: cannot be confused with text or a number
FIELD_JOINER = "\n"


def hash_prefix(model: str, dims: int, passages: tuple[int, int] | None = None) -> str:
    """What the hash covers besides the text; ``passages`` = (max_tokens, overlap_tokens)."""
    prefix = f"{model}{SEPARATOR}{dims}{SEPARATOR}"
    if passages is not None:
        prefix += f"passages {passages[0]} {passages[1]}{SEPARATOR}"
    return prefix


def content_hash(model: str, dims: int, text: str, passages: tuple[int, int] | None = None) -> str:
    """Raises ``UnicodeEncodeError`` for a lone surrogate: JSON can carry ``"\\ud800"`` into
    ``_source``, but it is not text (no UTF-8, no tokens); ``unencodable_reason`` names it."""
    return hashlib.sha256((hash_prefix(model, dims, passages) + text).encode("utf-8")).hexdigest()


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


@dataclass(frozen=True)
class DocText:
    text: str  # the joined text fields: what is hashed, and embedded as one vector
    body_start: int = 0  # where the text after the title (first field) starts; 0: no title


def doc_text(source: Mapping[str, Any], fields: Sequence[str]) -> DocText:
    """The joined text and where its title ends: passages carry the title as context."""
    text = document_text(source, fields)
    title = document_text(source, fields[:1])
    has_body = bool(title) and len(text) > len(title)
    return DocText(text, len(title) + len(FIELD_JOINER) if has_body else 0)


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


@dataclass(frozen=True)
class Passage:
    start: int  # characters [start, end) of the joined text
    end: int
    vector: np.ndarray


Embedded = np.ndarray | Sequence[Passage]  # one vector, or a document's passages


def _values(vector: np.ndarray) -> list[float]:
    values: list[float] = np.round(vector.astype(np.float64), VECTOR_DECIMALS).tolist()
    return values


def vector_doc(
    vector_field: str, model: str, dims: int, vector: Embedded | None, digest: str | None
) -> dict[str, Any]:
    """The partial document written back: the vector (or every passage: a list, which a
    partial update replaces whole, so no passage of an older text survives) and its
    ``_embed`` record; nulls to clear both."""
    if vector is None:
        return deep_merge(nested(vector_field, None), {"_embed": None})
    values: Any
    if isinstance(vector, np.ndarray):
        values = _values(vector)
    else:
        values = [{"vector": _values(p.vector), "start": p.start, "end": p.end} for p in vector]
    embed = {
        "hash": digest,
        "model": model,
        "dims": dims,
        "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    return deep_merge(nested(vector_field, values), {"_embed": embed})
