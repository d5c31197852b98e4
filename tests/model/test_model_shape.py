"""The shape setup reads from a model's config files matches the loaded encoder's."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from es_embed.config import ModelSettings
from es_embed.embed.encoder import HFEncoder
from es_embed.embed.shape import read_model_shape


def test_minilm_is_not_matryoshka_and_its_width_matches_the_encoder(
    minilm_dir: Path, minilm_encoder: HFEncoder
) -> None:
    shape = read_model_shape(ModelSettings(name=str(minilm_dir)))
    # The config files give no token window (that needs the tokenizer): everything else matches.
    assert shape == replace(minilm_encoder.info.shape, max_length=None)
    assert (shape.hidden_size, shape.matryoshka) == (384, False)
    # A local directory is served by its name, never its path.
    assert shape.model_id == minilm_dir.name and "/" not in shape.model_id


def test_a_qwen3_model_is_matryoshka(tiny_qwen_dir: Path, tiny_qwen_encoder: HFEncoder) -> None:
    shape = read_model_shape(ModelSettings(name=str(tiny_qwen_dir)))
    assert shape == replace(tiny_qwen_encoder.info.shape, max_length=None)
    assert shape.matryoshka is True
