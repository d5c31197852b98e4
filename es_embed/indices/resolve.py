"""One configured index resolved against one model: the effective dims, similarity, text
fields, vector field and passage settings, decided once and used by setup, the follower,
the loader and search.

``IndexSettings.dims: 0`` means the model's width; anything smaller is Matryoshka truncation
and needs a model trained for it (a plain model's truncated vectors lose most of their
quality without any error). The refusals name the index and the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from es_embed.config import ConfigError, IndexSettings, PassageSettings
from es_embed.embed.shape import ModelShape
from es_embed.indices.document import DocText, content_hash, doc_text, hash_prefix

MIN_DIMS = 32  # below this Matryoshka vectors are not worth an index


@dataclass(frozen=True)
class IndexTarget:
    """What every part of es-embed needs to know of one configured index."""

    name: str  # configured index, alias or data stream
    text_fields: tuple[str, ...]
    vector_field: str
    dims: int  # effective, never 0
    similarity: str
    model: str  # served model id, part of the hash
    conf: IndexSettings = field(repr=False, compare=False)
    passages: PassageSettings | None = None  # None: one vector per document

    @property
    def _passage_key(self) -> tuple[int, int] | None:
        p = self.passages
        return None if p is None else (p.max_tokens, p.overlap_tokens)

    @property
    def hash_prefix(self) -> str:
        return hash_prefix(self.model, self.dims, self._passage_key)

    def hash(self, text: str) -> str:
        return content_hash(self.model, self.dims, text, self._passage_key)

    def text(self, source: Mapping[str, Any]) -> DocText:
        return doc_text(source, self.text_fields)


def effective_dims(conf: IndexSettings, model: ModelShape) -> int:
    where = f"indices ({conf.name}).dims"
    width = model.hidden_size
    dims = conf.dims or width
    if dims == width:
        return dims
    if dims > width:
        raise ConfigError(
            f"{where}: {dims} is more than {model.model_id!r} produces ({width} dimensions)"
        )
    if not model.matryoshka:
        raise ConfigError(
            f"{where}: {dims} dims would truncate the vectors of {model.model_id!r}, which "
            f"was not trained for Matryoshka truncation; use its full {width} dims (dims: 0), "
            "or set model.matryoshka: yes if it was"
        )
    if model.matryoshka_dims and dims not in model.matryoshka_dims:
        valid = ", ".join(map(str, model.matryoshka_dims))
        raise ConfigError(f"{where}: {model.model_id!r} supports {valid} dims, not {dims}")
    if dims < min(MIN_DIMS, width):
        raise ConfigError(f"{where}: at least {min(MIN_DIMS, width)} dims, got {dims}")
    return dims


def checked_passages(conf: IndexSettings, model: ModelShape) -> PassageSettings | None:
    """The passage settings, once they fit the model's window (when the shape knows it:
    ``setup`` reads no tokenizer). Bounds without a model are checked on loading."""
    p = conf.passages
    if p is not None and model.max_length is not None and p.max_tokens > model.max_length:
        raise ConfigError(
            f"indices ({conf.name}).passages.max_tokens: {p.max_tokens} is more than "
            f"{model.model_id!r} reads at once ({model.max_length} tokens, model.max_length); "
            f"use at most {model.max_length}"
        )
    return p


def resolve_index(conf: IndexSettings, model: ModelShape) -> IndexTarget:
    return IndexTarget(
        name=conf.name,
        text_fields=tuple(conf.text_fields),
        vector_field=conf.vector_field,
        dims=effective_dims(conf, model),
        similarity=conf.similarity,
        model=model.model_id,
        conf=conf,
        passages=checked_passages(conf, model),
    )


def resolve_all(confs: Iterable[IndexSettings], model: ModelShape) -> list[IndexTarget]:
    return [resolve_index(conf, model) for conf in confs]


def text_only(conf: IndexSettings, model_id: str) -> IndexTarget:
    """For BM25 alone (no model at hand): everything but the dims, which stay 0."""
    return IndexTarget(
        name=conf.name,
        text_fields=tuple(conf.text_fields),
        vector_field=conf.vector_field,
        dims=0,
        similarity=conf.similarity,
        model=model_id,
        conf=conf,
        passages=conf.passages,
    )
