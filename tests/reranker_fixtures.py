"""Tiny real rerankers, built in the test session (no model hub is contacted).

``write_tiny_qwen_reranker``: a random two-layer ``Qwen3ForCausalLM`` with a Qwen-shaped
tokenizer in which ``yes`` and ``no`` are whole tokens (the reranker reads its answer there)
and which, like Qwen3-Reranker's, appends nothing to an input.
``write_tiny_cross_encoder``: a random two-layer ``BertForSequenceClassification`` (one label)
with all-MiniLM-L6-v2's WordPiece tokenizer, saved by sentence-transformers' ``CrossEncoder``
so its directory holds the files CrossEncoder writes (modules.json, the activation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.model_fixtures import minilm_path, tiny_qwen3_config, write_tiny_tokenizer

# Training text that makes the answer words single tokens, as they are in Qwen's vocabulary.
ANSWER_TEXT = tuple(["yes", "no", 'Note that the answer can only be "yes" or "no".'] * 8)
# Two layers of width 32; max_position_embeddings stays BERT's 512.
TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "initializer_range": 0.2,
}


def write_tiny_qwen_reranker(path: Path, seed: int = 0, append_eot: bool = False) -> Path:
    import torch
    from transformers import Qwen3ForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    write_tiny_tokenizer(path, extra_text=ANSWER_TEXT, append_eot=append_eot)
    config = tiny_qwen3_config(path, architectures=["Qwen3ForCausalLM"])
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    with torch.no_grad():
        # Small answer logits keep P(yes) away from 0 and 1, where every score would look alike.
        model.lm_head.weight.mul_(0.05)
    model.save_pretrained(str(path))
    return path


def write_tiny_cross_encoder(path: Path, seed: int = 0) -> Path:
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    raw = path / "hf"
    raw.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    tokenizer.save_pretrained(str(raw))
    config = BertConfig(vocab_size=len(tokenizer), num_labels=1, **TINY_BERT)
    torch.manual_seed(seed)
    BertForSequenceClassification(config).eval().save_pretrained(str(raw))
    saved = path / "cross-encoder"
    CrossEncoder(str(raw), device="cpu").save(str(saved))
    return saved


@pytest.fixture(scope="session")
def tiny_qwen_reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen_reranker(tmp_path_factory.mktemp("tiny-qwen3-reranker"))


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))
