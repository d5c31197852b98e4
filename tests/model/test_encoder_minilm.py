"""The real encoder on the real all-MiniLM-L6-v2 (mean pooling, right padding, 256 tokens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from es_embed.embed.encoder import HFEncoder
from tests.model.helpers import cosines, encode

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "Vaccines train the immune system to recognise a virus before an infection. " * 40,
    "",
    "Le café est très bon.",
]


def test_info_is_read_from_the_sentence_transformers_files(minilm_encoder: HFEncoder) -> None:
    info = minilm_encoder.info
    assert (info.hidden_size, info.pooling, info.max_length) == (384, "mean", 256)
    assert info.query_prompt is None and info.matryoshka_dims is None
    assert minilm_encoder.spec.normalize and minilm_encoder.spec.padding_side == "right"


def test_parity_with_sentence_transformers(minilm_encoder: HFEncoder, minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, batch_size=4)
    assert cosines(encode(minilm_encoder, TEXTS), reference).min() >= 0.9999


def test_mixed_length_batch_equals_one_at_a_time(minilm_encoder: HFEncoder) -> None:
    batched = encode(minilm_encoder, TEXTS)
    alone = np.concatenate([encode(minilm_encoder, [t]) for t in TEXTS])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_similar_sentences_are_closer(minilm_encoder: HFEncoder) -> None:
    eating, bread, movie = encode(minilm_encoder, TEXTS[:3])
    assert eating @ bread > 0.6 > eating @ movie


def test_truncation_keeps_cls_and_sep(minilm_encoder: HFEncoder, minilm_dir: Path) -> None:
    reference = AutoTokenizer.from_pretrained(str(minilm_dir))
    full = reference(TEXTS[3])["input_ids"]
    (token,) = minilm_encoder.tokenize([TEXTS[3]])
    assert len(full) > 256 and token.original_length == len(full)
    assert len(token.ids) == 256 and token.truncated
    assert token.ids[0] == reference.cls_token_id and token.ids[-1] == reference.sep_token_id
    assert list(token.ids[:255]) == full[:255]
    short = [list(t.ids) for t in minilm_encoder.tokenize(TEXTS[:3])]
    assert short == reference(TEXTS[:3])["input_ids"]
