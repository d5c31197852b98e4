"""One resolution per index: effective dims (Matryoshka-checked), similarity, fields, model."""

from __future__ import annotations

import pytest

from es_embed.config import ConfigError, IndexSettings, ModelSettings
from es_embed.embed.shape import ModelShape, supports_matryoshka
from es_embed.indices.document import content_hash
from es_embed.indices.resolve import resolve_all, resolve_index, text_only

PLAIN = ModelShape("all-MiniLM-L6-v2", 384, matryoshka=False)
MRL = ModelShape("Qwen3-Embedding-0.6B", 1024, matryoshka=True)
DECLARED = ModelShape("declared", 768, matryoshka=True, matryoshka_dims=(256, 512, 768))


def conf(dims: int = 0, **kw: object) -> IndexSettings:
    return IndexSettings(name="docs", dims=dims, **kw)  # type: ignore[arg-type]


def test_dims_zero_is_the_models_width_and_every_field_is_carried() -> None:
    c = conf(text_fields=("t", "b"), vector_field="v", similarity="dot_product")
    target = resolve_index(c, PLAIN)
    assert (target.name, target.text_fields, target.vector_field) == ("docs", ("t", "b"), "v")
    assert (target.dims, target.similarity, target.model) == (384, "dot_product", PLAIN.model_id)
    assert target.hash("x") == content_hash(PLAIN.model_id, 384, "x")
    assert target.conf is c


def test_matryoshka_dims_for_a_model_trained_for_them() -> None:
    assert resolve_index(conf(256), MRL).dims == 256
    assert resolve_index(conf(512), DECLARED).dims == 512


def test_truncating_a_plain_model_is_refused_naming_index_and_model() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_index(conf(128), PLAIN)
    message = str(info.value)
    assert message.startswith("indices (docs).dims: 128")
    assert "'all-MiniLM-L6-v2'" in message and "Matryoshka" in message


@pytest.mark.parametrize(
    ("shape", "dims", "needle"),
    [
        (PLAIN, 385, "more than 'all-MiniLM-L6-v2' produces (384"),
        (DECLARED, 300, "supports 256, 512, 768 dims, not 300"),
        (MRL, 16, "at least 32 dims, got 16"),
    ],
)
def test_other_impossible_dims(shape: ModelShape, dims: int, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_index(conf(dims), shape)
    assert needle in str(info.value)


def test_resolve_all_and_text_only() -> None:
    assert [t.dims for t in resolve_all([conf(), conf(512)], MRL)] == [1024, 512]
    bm25 = text_only(conf(), "m")
    assert (bm25.dims, bm25.model, bm25.text_fields) == (0, "m", ("title", "text"))


@pytest.mark.parametrize(
    ("name", "setting", "model_type", "declared", "expected"),
    [
        ("sentence-transformers/all-MiniLM-L6-v2", "auto", "bert", None, False),
        ("Qwen/Qwen3-Embedding-4B", "auto", "qwen3", None, True),
        ("/models/my-qwen", "auto", "qwen3", None, True),
        ("nomic-ai/nomic-embed-text-v1.5", "auto", "nomic_bert", None, True),
        ("org/custom", "auto", "bert", (128, 256), True),
        ("org/custom", "yes", "bert", None, True),
        ("Qwen/Qwen3-Embedding-4B", "no", "qwen3", None, False),
    ],
)
def test_which_models_may_be_truncated(
    name: str, setting: str, model_type: str, declared: tuple[int, ...] | None, expected: bool
) -> None:
    model = ModelSettings(name=name, matryoshka=setting)  # type: ignore[arg-type]
    assert supports_matryoshka(model, model_type, declared) is expected
