"""The reranker on tiny random models, against each family's reference.

Qwen3-Reranker: the model card's "Transformers Usage" code (``qwen3_reranker_reference.py``);
its wrong variants prove the parity test would catch a wrong prompt or padding side.
Cross-encoders: ``sentence_transformers.CrossEncoder.predict``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from es_embed.config import ConfigError, RerankerSettings
from es_embed.embed.rerank import AnyReranker, load_reranker
from tests.model.qwen3_reranker_reference import WRONG, reference_scores
from tests.reranker_fixtures import write_tiny_qwen_reranker

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "The capital of France is Paris.",
    "Bananas are yellow.",
    "x",
    "Elasticsearch stores documents and finds them with BM25 and dense vectors. " * 12,
    "Ünïcödé café and 日本語 text with numbers 3.14 and 2025",
]
ST_CONFIG = "config_sentence_transformers.json"
MAX_LENGTH = 240  # cuts the long document (prompt about 150 tokens + ~170 of document)


def load(path: Path, max_length: int = MAX_LENGTH, **extra: str) -> AnyReranker:
    return load_reranker(
        RerankerSettings(name=str(path), device="cpu", max_length=max_length, **extra)
    )


def scores(
    reranker: AnyReranker, query: str, documents: list[str], instruction: str | None = None
) -> np.ndarray:
    tokens = reranker.tokenize_pairs(query, documents, instruction)
    return reranker.forward(tokens)


@pytest.fixture(scope="module")
def qwen3(tiny_qwen_reranker_dir: Path) -> AnyReranker:
    return load(tiny_qwen_reranker_dir)


def test_qwen3_family_is_detected_and_limits_read(qwen3: AnyReranker) -> None:
    info = qwen3.info
    assert (info.family, info.max_length, info.device, info.dtype) == (
        "qwen3",
        MAX_LENGTH,
        "cpu",
        "float32",
    )
    assert info.takes_instruction


def test_qwen3_scores_equal_the_model_card_recipe(
    qwen3: AnyReranker, tiny_qwen_reranker_dir: Path
) -> None:
    expected = reference_scores(tiny_qwen_reranker_dir, QUERY, DOCUMENTS, max_length=MAX_LENGTH)
    got = scores(qwen3, QUERY, DOCUMENTS)
    assert got.dtype == np.float32 and got.shape == (len(DOCUMENTS),)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # Random weights must still tell pairs apart, or parity would prove little.
    assert float(np.ptp(got)) > 0.02


def test_qwen3_instruction_is_the_request_s_or_the_configured_one(
    tiny_qwen_reranker_dir: Path, qwen3: AnyReranker
) -> None:
    task = "Find the city named in the question"
    expected = reference_scores(
        tiny_qwen_reranker_dir, QUERY, DOCUMENTS, instruction=task, max_length=MAX_LENGTH
    )
    np.testing.assert_allclose(scores(qwen3, QUERY, DOCUMENTS, task), expected, atol=1e-4)
    configured = load(tiny_qwen_reranker_dir, instruction=task)
    np.testing.assert_allclose(scores(configured, QUERY, DOCUMENTS), expected, atol=1e-4)
    assert np.abs(expected - scores(qwen3, QUERY, DOCUMENTS)).max() > 1e-3


@pytest.mark.parametrize("variant", sorted(WRONG))
def test_a_wrong_prompt_or_padding_side_would_fail_the_parity_test(
    variant: str, qwen3: AnyReranker, tiny_qwen_reranker_dir: Path
) -> None:
    wrong = reference_scores(
        tiny_qwen_reranker_dir, QUERY, DOCUMENTS, WRONG[variant], max_length=MAX_LENGTH
    )
    assert np.abs(scores(qwen3, QUERY, DOCUMENTS) - wrong).max() > 1e-3


def test_qwen3_long_pair_is_cut_at_the_end_and_reported(qwen3: AnyReranker) -> None:
    tokens = qwen3.tokenize_pairs(QUERY, DOCUMENTS)
    cut = [t for t in tokens if t.truncated]
    assert len(cut) == 1 and len(cut[0].ids) == MAX_LENGTH
    assert cut[0].original_length > MAX_LENGTH
    assert all(len(t.ids) == t.original_length for t in tokens if not t.truncated)


def test_qwen3_score_does_not_depend_on_the_batch(qwen3: AnyReranker) -> None:
    together = scores(qwen3, QUERY, DOCUMENTS)
    alone = np.array([scores(qwen3, QUERY, [doc])[0] for doc in DOCUMENTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_qwen3_matches_with_a_tokenizer_that_appends_end_of_text(tmp_path: Path) -> None:
    # Like Qwen3-Embedding's tokenizer: the recipe keeps the appended token inside the turn.
    path = write_tiny_qwen_reranker(tmp_path / "eot", seed=1, append_eot=True)
    expected = reference_scores(path, QUERY, DOCUMENTS, max_length=MAX_LENGTH)
    np.testing.assert_allclose(scores(load(path), QUERY, DOCUMENTS), expected, atol=1e-4)


# ---- cross-encoders --------------------------------------------------------------------


def cross_encoder_predict(path: Path, query: str, documents: list[str]) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(path), device="cpu")
    return np.asarray(model.predict([(query, d) for d in documents], show_progress_bar=False))


def test_cross_encoder_scores_equal_cross_encoder_predict(tiny_cross_encoder_dir: Path) -> None:
    documents = [*DOCUMENTS, "a very long document about nothing in particular " * 80]
    reranker = load(tiny_cross_encoder_dir, max_length=8192)
    assert (reranker.info.family, reranker.info.max_length) == ("cross-encoder", 512)
    assert not reranker.info.takes_instruction
    got = scores(reranker, QUERY, documents)
    np.testing.assert_allclose(
        got, cross_encoder_predict(tiny_cross_encoder_dir, QUERY, documents), atol=1e-4
    )
    assert float(np.ptp(got)) > 0.01
    tokens = reranker.tokenize_pairs(QUERY, documents)
    assert [t.truncated for t in tokens] == [False] * len(DOCUMENTS) + [True]
    assert len(tokens[-1].ids) == 512


def edited_copy(source: Path, target: Path, file: str, **changes: object) -> Path:
    """A copy of a model directory with some keys of one of its JSON files changed."""
    shutil.copytree(source, target)
    data = json.loads((target / file).read_text())
    (target / file).write_text(json.dumps({**data, **changes}))
    return target


def test_cross_encoder_activation_comes_from_its_files(
    tiny_cross_encoder_dir: Path, tmp_path: Path
) -> None:
    identity = "torch.nn.modules.linear.Identity"
    path = edited_copy(tiny_cross_encoder_dir, tmp_path / "id", ST_CONFIG, activation_fn=identity)
    got = scores(load(path), QUERY, DOCUMENTS)
    np.testing.assert_allclose(got, cross_encoder_predict(path, QUERY, DOCUMENTS), atol=1e-4)
    sigmoid = scores(load(tiny_cross_encoder_dir), QUERY, DOCUMENTS)
    np.testing.assert_allclose(1 / (1 + np.exp(-got)), sigmoid, atol=1e-5)


# ---- refusals --------------------------------------------------------------------------


def test_an_embedding_model_is_refused_naming_the_setting(tiny_qwen_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"reranker\.name: .*Qwen3Model.*Qwen3ForCausalLM"):
        load(tiny_qwen_dir)


def test_a_classifier_with_two_labels_is_refused(
    tmp_path: Path, tiny_cross_encoder_dir: Path
) -> None:
    labels = {
        "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    }
    path = edited_copy(tiny_cross_encoder_dir, tmp_path / "two", "config.json", **labels)
    with pytest.raises(ConfigError, match=r"reranker\.name: .*2 labels"):
        load(path)


def test_an_activation_es_embed_cannot_reproduce_is_refused(
    tmp_path: Path, tiny_cross_encoder_dir: Path
) -> None:
    softplus = "torch.nn.modules.activation.Softplus"
    path = edited_copy(tiny_cross_encoder_dir, tmp_path / "sp", ST_CONFIG, activation_fn=softplus)
    with pytest.raises(ConfigError, match=r"reranker\.name: activation .*Softplus"):
        load(path)


def test_a_length_leaving_no_room_is_refused(tiny_qwen_reranker_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^reranker\.max_length: 100 leaves no room"):
        load(tiny_qwen_reranker_dir, max_length=100)  # the prompt alone is about 150 tokens


def test_bad_device_and_missing_model_name_the_reranker_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^reranker\.device: "):
        load_reranker(RerankerSettings(name=str(tmp_path), device="tpu"))
    with pytest.raises(ConfigError, match=r"^reranker\.name: cannot load"):
        load_reranker(RerankerSettings(name=str(tmp_path / "absent"), device="cpu"))
