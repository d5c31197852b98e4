"""Passages in search: the nested kNN field, its ``inner_hits``, and each hit's best passages.

A passages index keeps one nested object per passage under the vector field:
``{vector, start, end}``, where ``[start, end)`` are characters of the document's text
fields joined with newlines (the text itself is stored once, in the document). kNN runs on
``<field>.vector``; Elasticsearch counts ``k`` in documents and returns each document's
best passages as inner hits (offsets only, from doc values). The passage text is then cut
from the hit's ``_source``, which therefore must carry the text fields: when the caller's
``source`` leaves them out, they are asked for anyway and removed again afterwards.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from es_embed.config import PassageSettings
from es_embed.indices.document import document_text

Body = dict[str, Any]


class Indexed(Protocol):
    """What these functions read of an index (an ``IndexTarget`` or ``IndexSettings``)."""

    @property
    def text_fields(self) -> tuple[str, ...]: ...
    @property
    def vector_field(self) -> str: ...
    @property
    def passages(self) -> PassageSettings | None: ...


@dataclass(frozen=True)
class PassageRead:
    """How the answer's passages are made from the hits of a plan."""

    field: str  # the nested field: the inner hits' name
    text_fields: tuple[str, ...]
    added: tuple[str, ...] = ()  # text fields fetched only to cut passages: removed after
    no_source: bool = False  # the caller asked for no _source at all
    no_text: bool = False  # the caller's source filter excludes a text field: text is null


@dataclass(frozen=True)
class PassageHit:
    score: float
    start: int
    end: int
    text: str | None = None  # None until cut from the hit's _source

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "score": self.score, "start": self.start, "end": self.end}


def knn_field(conf: Indexed) -> str:
    """The dense_vector kNN runs on: the field itself, or the passages' ``vector``."""
    return conf.vector_field if conf.passages is None else f"{conf.vector_field}.vector"


def inner_hits(conf: Indexed, count: int) -> Body | None:
    """The best ``count`` passages of each document: scores and offsets, no source."""
    if conf.passages is None or count <= 0:
        return None
    f = conf.vector_field
    return {"size": count, "_source": False, "docvalue_fields": [f"{f}.start", f"{f}.end"]}


def read_plan(conf: Indexed, count: int, source: Any) -> tuple[Any, PassageRead | None]:
    """The ``_source`` to ask for and how to cut passages, when this search returns any."""
    if conf.passages is None or count <= 0:
        return source, None
    fields = conf.text_fields
    if source is False:
        return list(fields), PassageRead(conf.vector_field, fields, fields, no_source=True)
    if isinstance(source, list):
        missing = _missing(fields, source)
        return [*source, *missing], PassageRead(conf.vector_field, fields, missing)
    if isinstance(source, dict) and ("includes" in source or "include" in source):
        key = "includes" if "includes" in source else "include"
        wanted = source[key] if isinstance(source[key], list) else [source[key]]
        missing = _missing(fields, wanted)
        widened = {**source, key: [*wanted, *missing]}
        return widened, PassageRead(conf.vector_field, fields, missing)
    # Everything but some fields: the text is there unless a text field is excluded, and
    # then the offsets would point into a shorter text: no text rather than the wrong one.
    excluded = source.get("excludes", source.get("exclude")) if isinstance(source, dict) else None
    patterns = [excluded] if isinstance(excluded, str) else list(excluded or [])
    blind = len(_missing(fields, patterns)) < len(fields)  # some text field matches one
    return source, PassageRead(conf.vector_field, fields, no_text=blind)


def _missing(fields: Sequence[str], wanted: Sequence[str]) -> tuple[str, ...]:
    return tuple(f for f in fields if not any(fnmatch.fnmatchcase(f, w) for w in wanted))


def from_inner_hits(raw: Mapping[str, Any], read: PassageRead) -> tuple[PassageHit, ...]:
    """A hit's passages as Elasticsearch ranked them (best first)."""
    inner = ((raw.get("inner_hits") or {}).get(read.field) or {}).get("hits") or {}
    out = []
    for h in inner.get("hits") or []:
        fields = h.get("fields") or {}
        start = (fields.get(f"{read.field}.start") or [None])[0]
        end = (fields.get(f"{read.field}.end") or [None])[0]
        if isinstance(start, int) and isinstance(end, int):
            out.append(PassageHit(float(h.get("_score") or 0.0), start, end))
    return tuple(sorted(out, key=lambda p: (-p.score, p.start)))


def with_text(
    passages: Sequence[PassageHit], source: Any, read: PassageRead
) -> tuple[list[PassageHit], Any]:
    """The passages with their text cut from the joined text fields, and the ``_source``
    the caller asked for (fields fetched only for this removed again)."""
    readable = isinstance(source, Mapping) and not read.no_text
    text = document_text(source, read.text_fields) if readable else ""
    cut = [
        PassageHit(p.score, p.start, p.end, text[p.start : p.end] if p.end <= len(text) else None)
        for p in passages
    ]
    if read.no_source:
        return cut, None
    if read.added and isinstance(source, dict):
        source = dict(source)
        for name in read.added:
            _drop(source, name)
    return cut, source


def _drop(source: dict[str, Any], path: str) -> None:
    """Remove ``a.b`` (a literal dotted key, or nested objects) and parents it leaves empty."""
    if path in source:
        del source[path]
        return
    head, _, rest = path.partition(".")
    child = source.get(head)
    if rest and isinstance(child, dict):
        child = dict(child)
        _drop(child, rest)
        if child:
            source[head] = child
        else:
            del source[head]
