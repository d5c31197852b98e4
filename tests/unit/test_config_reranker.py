"""The reranker section: off by default, every setting from the file or the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from es_embed.config import ConfigError, load_settings


def test_no_reranker_unless_named() -> None:
    assert load_settings(env={}).reranker.name is None
    assert load_settings(env={"ES_EMBED_RERANKER_NAME": ""}).reranker.name is None


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("reranker:\n  name: BAAI/bge-reranker-v2-m3\n  max_length: 512\n")
    overrides = {"name": "Qwen/Qwen3-Reranker-0.6B", "device": "cuda:1", "instruction": "Find"}
    env = {f"ES_EMBED_RERANKER_{key.upper()}": value for key, value in overrides.items()}
    reranker = load_settings(path, env=env).reranker
    assert {key: getattr(reranker, key) for key in overrides} == overrides
    assert reranker.max_length == 512  # from the file


@pytest.mark.parametrize(
    ("yaml", "words"),
    [
        ("reranker:\n  nme: x\n", ("reranker.'nme'", "did you mean 'name'")),
        ("reranker:\n  dtype: int8\n", ("reranker.dtype", "float16")),
        ("reranker:\n  max_length: lots\n", ("reranker.max_length", "number")),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, yaml: str, words: tuple[str, ...]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as err:
        load_settings(path, env={})
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_max_length_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("reranker:\n  max_length: 0\n")
    with pytest.raises(ConfigError, match=r"reranker\.max_length: must be greater than 0"):
        load_settings(path, env={})
