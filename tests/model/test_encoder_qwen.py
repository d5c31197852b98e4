"""The real encoder on a tiny random Qwen3 laid out like Qwen3-Embedding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from es_embed.config import ConfigError, ModelSettings
from es_embed.embed.encoder import HFEncoder, NonFiniteOutputError, load_encoder
from tests.model.helpers import cosines, encode
from tests.model_fixtures import EOT, QUERY_PROMPT, write_tiny_qwen

TEXTS = [
    "What causes the seasons on Earth?",
    "Vaccines train the immune system to recognise a virus.",
    "x",
    "",
    "Ünïcödé café and 日本語 text with numbers 3.14 and 2025, " * 4,
    "The quick brown fox jumps over the lazy dog.",
]


def test_info_has_qwen3_defaults(tiny_qwen_encoder: HFEncoder) -> None:
    info = tiny_qwen_encoder.info
    assert (info.hidden_size, info.pooling, info.device, info.dtype) == (
        64,
        "lasttoken",
        "cpu",
        "float32",
    )
    assert info.max_length == 2048  # min(setting 8192, max_position_embeddings 2048)
    assert tiny_qwen_encoder.spec.padding_side == "left"


def test_ids_match_the_hf_tokenizer_and_end_with_end_of_text(
    tiny_qwen_encoder: HFEncoder, tiny_qwen_dir: Path
) -> None:
    reference = AutoTokenizer.from_pretrained(str(tiny_qwen_dir))
    eot = reference.convert_tokens_to_ids(EOT)
    tokens = tiny_qwen_encoder.tokenize(TEXTS)
    assert [list(t.ids) for t in tokens] == reference(TEXTS)["input_ids"]
    assert all(t.ids[-1] == eot for t in tokens)
    assert [t.original_length for t in tokens] == [len(t.ids) for t in tokens]


def test_vectors_are_unit_float32_and_differ_between_texts(tiny_qwen_encoder: HFEncoder) -> None:
    vectors = encode(tiny_qwen_encoder, TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Random weights must still separate texts, or the parity checks below would prove little.
    similarity = vectors @ vectors.T
    assert similarity[~np.eye(len(TEXTS), dtype=bool)].max() < 0.95


def test_mixed_length_batch_equals_one_at_a_time(tiny_qwen_encoder: HFEncoder) -> None:
    batched = encode(tiny_qwen_encoder, TEXTS)
    alone = np.concatenate([encode(tiny_qwen_encoder, [t]) for t in TEXTS])
    assert cosines(batched, alone).min() >= 0.99999
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_truncation_keeps_end_of_text_and_reports_original_length(tiny_qwen_dir: Path) -> None:
    encoder = load_encoder(ModelSettings(name=str(tiny_qwen_dir), device="cpu", max_length=16))
    assert encoder.info.max_length == 16
    reference = AutoTokenizer.from_pretrained(str(tiny_qwen_dir))
    text = TEXTS[4]
    full = reference(text)["input_ids"]
    assert len(full) > 16
    (token,) = encoder.tokenize([text])
    assert len(token.ids) == 16 and token.truncated
    assert token.original_length == len(full)
    assert list(token.ids[:15]) == full[:15]  # the start is kept ...
    assert token.ids[-1] == reference.convert_tokens_to_ids(EOT)  # ... and the EOT still last
    (short,) = encoder.tokenize(["x"])
    assert not short.truncated


def test_parity_with_sentence_transformers(tiny_qwen_st_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    encoder = load_encoder(ModelSettings(name=str(tiny_qwen_st_dir), device="cpu"))
    assert encoder.info.query_prompt == QUERY_PROMPT
    reference = SentenceTransformer(str(tiny_qwen_st_dir), device="cpu")
    documents = reference.encode(TEXTS, batch_size=4)
    assert cosines(encode(encoder, TEXTS), documents).min() >= 0.9999
    queries = reference.encode(TEXTS[:3], prompt_name="query")
    ours = encode(encoder, [QUERY_PROMPT + t for t in TEXTS[:3]])
    assert cosines(ours, queries).min() >= 0.9999


def test_older_tokenizer_without_end_of_text_gets_it_appended(
    tiny_qwen_dir: Path,
    tiny_qwen_encoder: HFEncoder,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shutil.copytree(tiny_qwen_dir, tmp_path, dirs_exist_ok=True)
    tokenizer_json = json.loads((tmp_path / "tokenizer.json").read_text())
    tokenizer_json["post_processor"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    plain = AutoTokenizer.from_pretrained(str(tmp_path))
    eot = plain.convert_tokens_to_ids(EOT)
    assert plain("hello")["input_ids"][-1] != eot  # the premise: this tokenizer does not add it

    with caplog.at_level("WARNING", logger="es_embed.embed.encoder"):
        encoder = load_encoder(ModelSettings(name=str(tmp_path), device="cpu"))
    assert sum("does not append" in r.getMessage() for r in caplog.records) == 1
    tokens = encoder.tokenize(TEXTS)
    assert all(t.ids[-1] == eot for t in tokens)
    assert [t.ids for t in tokens] == [t.ids for t in tiny_qwen_encoder.tokenize(TEXTS)]
    np.testing.assert_allclose(encode(encoder, TEXTS), encode(tiny_qwen_encoder, TEXTS), atol=1e-6)


def test_float16_works_when_the_model_fits_it(
    tiny_qwen_dir: Path, tiny_qwen_encoder: HFEncoder
) -> None:
    encoder = load_encoder(ModelSettings(name=str(tiny_qwen_dir), device="cpu", dtype="float16"))
    assert encoder.info.dtype == "float16"
    vectors = encode(encoder, TEXTS[:3])
    assert vectors.dtype == np.float32
    assert cosines(vectors, encode(tiny_qwen_encoder, TEXTS[:3])).min() > 0.99


def test_float16_overflow_is_refused_at_start_up(tmp_path: Path) -> None:
    # Embeddings of ~1e5 are fine in float32 but overflow float16 (max 65504) to inf.
    path = write_tiny_qwen(tmp_path / "huge", embedding_scale=2e5)
    assert np.isfinite(
        encode(load_encoder(ModelSettings(name=str(path), device="cpu")), ["a"])
    ).all()
    with pytest.raises(ConfigError, match="^model.dtype: float16 gives non-finite"):
        load_encoder(ModelSettings(name=str(path), device="cpu", dtype="float16"))


def test_non_finite_output_raises_instead_of_returning(tiny_qwen_dir: Path) -> None:
    encoder = load_encoder(ModelSettings(name=str(tiny_qwen_dir), device="cpu"))
    with torch.no_grad():
        encoder._model.norm.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteOutputError, match="not finite"):
        encode(encoder, ["a"])


def test_missing_model_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^model.name: cannot load"):
        load_encoder(ModelSettings(name=str(tmp_path / "nowhere"), device="cpu"))
