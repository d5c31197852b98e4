"""What an existing vector field must be for es-embed to use it: refusals, not repairs.

A field's type (``dense_vector`` for one vector per document, ``nested`` for passages), dims
and similarity cannot change in place, so ``setup`` refuses each mismatch with a message
that names the index, both values and the way out (another setting, or a reindex).
"""

from __future__ import annotations

from typing import Any

from es_embed.config import IndexSettings
from es_embed.errors import EmbedError, ErrorKind


def conflict(message: str, param: str) -> EmbedError:
    return EmbedError(ErrorKind.UNPROCESSABLE, message, param=param, code="mapping_conflict")


def lookup(props: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: Any = {"properties": props}
    for part in path.split("."):
        node = (node.get("properties") or {}).get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node if isinstance(node, dict) else None


def check_shape(conf: IndexSettings, index: str, kind: str) -> None:
    """Refuse to switch an index between one vector per document and passages: the field's
    type (dense_vector or nested) cannot change in place, and kNN would miss half of it."""
    wants = "nested" if conf.passages is not None else "dense_vector"
    if kind == wants or kind not in ("nested", "dense_vector"):
        return
    field_ = conf.vector_field
    if wants == "nested":
        message = (
            f"index {index}: field {field_!r} holds one vector per document (dense_vector), "
            "but the configuration embeds it passage by passage (a nested field); an index "
            "cannot switch in place: reindex into a new index set up with passages, or "
            "remove 'passages' from this index's configuration"
        )
    else:
        message = (
            f"index {index}: field {field_!r} holds passages (a nested field), but the "
            "configuration asks for one vector per document; an index cannot switch in "
            "place: reindex into a new index, or set 'passages' for this index again"
        )
    raise conflict(message, f"indices ({conf.name}).passages")


def check_vector_field(
    conf: IndexSettings, index: str, dims: int, existing: dict[str, Any] | None
) -> None:
    """Refuse, naming the index and both values, what cannot change in place: the field's
    type, its dims and its similarity."""
    if existing is None:
        return
    field_ = conf.vector_field
    where = f"indices ({conf.name})"
    kind = existing.get("type", "object")
    check_shape(conf, index, kind)
    if kind == "nested":
        existing = lookup(existing.get("properties") or {}, "vector")
        field_ += ".vector"
        if existing is None:
            return
    if existing.get("type") != "dense_vector":
        raise conflict(
            f"index {index}: field {field_!r} exists as {existing.get('type')!r}, not "
            "dense_vector; choose another vector_field or reindex",
            f"{where}.vector_field",
        )
    have = existing.get("dims")
    if have is not None and have != dims:
        raise conflict(
            f"index {index}: field {field_!r} has {have} dims but the configuration asks "
            f"for {dims}; set dims: {have} for this index, or reindex into a new index "
            "(dims cannot change in place)",
            f"{where}.dims",
        )
    similarity = existing.get("similarity", "cosine")
    if similarity != conf.similarity:
        raise conflict(
            f"index {index}: field {field_!r} uses similarity {similarity!r} but the "
            f"configuration asks for {conf.similarity!r}; set similarity: {similarity} "
            "for this index, or reindex into a new index",
            f"{where}.similarity",
        )
