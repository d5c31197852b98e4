"""Reading pooling, normalisation, prompts and limits from sentence-transformers files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from es_embed.config import ConfigError
from es_embed.embed.st_config import read_pooling_spec

QWEN = SimpleNamespace(model_type="qwen3")
BERT = SimpleNamespace(model_type="bert")


def write(path: Path, name: str, data: object) -> None:
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(json.dumps(data))


def modules(*kinds: str) -> list[dict[str, object]]:
    paths = {"Transformer": "", "Pooling": "1_Pooling", "Normalize": "2_Normalize"}
    return [
        {
            "idx": i,
            "name": str(i),
            "path": paths.get(k, k),
            "type": f"sentence_transformers.models.{k}",
        }
        for i, k in enumerate(kinds)
    ]


def test_without_files_a_decoder_gets_qwen3_defaults(tmp_path: Path) -> None:
    spec = read_pooling_spec(tmp_path, QWEN)
    assert (spec.pooling, spec.normalize, spec.padding_side, spec.from_files) == (
        "lasttoken",
        True,
        "left",
        False,
    )


def test_without_files_an_encoder_is_mean_pooled(tmp_path: Path) -> None:
    spec = read_pooling_spec(tmp_path, BERT)
    assert (spec.pooling, spec.padding_side) == ("mean", "right")


@pytest.mark.parametrize(
    ("pooling_config", "expected"),
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"pooling_mode_mean_tokens": True}, "mean"),
        ({"pooling_mode_lasttoken": True, "include_prompt": True}, "lasttoken"),
        ({"pooling_mode": "cls"}, "cls"),  # sentence-transformers >= 6
        ({"pooling_mode": ["lasttoken"]}, "lasttoken"),
    ],
)
def test_pooling_mode_is_read_in_old_and_new_formats(
    tmp_path: Path, pooling_config: dict[str, object], expected: str
) -> None:
    write(tmp_path, "modules.json", modules("Transformer", "Pooling"))
    write(tmp_path, "1_Pooling/config.json", {"word_embedding_dimension": 8, **pooling_config})
    spec = read_pooling_spec(tmp_path, QWEN)
    assert spec.pooling == expected
    assert spec.normalize is False  # no Normalize module declared
    assert spec.from_files


def test_normalize_prompt_and_max_seq_length_are_read(tmp_path: Path) -> None:
    write(tmp_path, "modules.json", modules("Transformer", "Pooling", "Normalize"))
    write(tmp_path, "1_Pooling/config.json", {"pooling_mode_mean_tokens": True})
    write(tmp_path, "config_sentence_transformers.json", {"prompts": {"query": "query: "}})
    write(tmp_path, "sentence_bert_config.json", {"max_seq_length": 128})
    spec = read_pooling_spec(tmp_path, BERT)
    assert (spec.normalize, spec.query_prompt, spec.max_seq_length) == (True, "query: ", 128)


def test_matryoshka_dims_are_read_from_the_st_config(tmp_path: Path) -> None:
    write(tmp_path, "config_sentence_transformers.json", {"matryoshka_dims": [256, 64, 128]})
    assert read_pooling_spec(tmp_path, QWEN).matryoshka_dims == (64, 128, 256)
    assert read_pooling_spec(None, QWEN).matryoshka_dims is None


@pytest.mark.parametrize(
    ("pooling_config", "message"),
    [
        ({"pooling_mode_max_tokens": True}, "pooling 'max'"),
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, "pooling \\["),
        ({"pooling_mode_mean_tokens": True, "include_prompt": False}, "include_prompt"),
    ],
)
def test_pooling_we_cannot_reproduce_is_refused(
    tmp_path: Path, pooling_config: dict[str, object], message: str
) -> None:
    write(tmp_path, "modules.json", modules("Transformer", "Pooling"))
    write(tmp_path, "1_Pooling/config.json", pooling_config)
    with pytest.raises(ConfigError, match=f"^model.name: .*{message}"):
        read_pooling_spec(tmp_path, BERT)


def test_an_unsupported_module_is_refused_by_name(tmp_path: Path) -> None:
    write(tmp_path, "modules.json", modules("Transformer", "Pooling", "Dense"))
    with pytest.raises(ConfigError, match="sentence_transformers.models.Dense"):
        read_pooling_spec(tmp_path, BERT)
