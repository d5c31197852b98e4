"""Settings: the example file, environment overrides, and errors that name the key, through
``load_settings`` and through ``es-embed serve`` (one line on stderr, exit 2)."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
import yaml

from es_embed import cli
from es_embed.config import (
    _SECTIONS,
    ConfigError,
    IndexSettings,
    Settings,
    describe,
    load_settings,
    settings_from_dict,
)

EXAMPLE = Path(__file__).parents[2] / "es-embed.example.yaml"


def test_example_file_is_the_defaults() -> None:
    assert load_settings(EXAMPLE, env={}) == Settings()


def test_example_file_documents_every_setting() -> None:
    text = EXAMPLE.read_text()
    for section, cls in _SECTIONS.items():
        assert re.search(rf"^{section}:$", text, re.MULTILINE), section
        for name, _, _ in describe(cls):
            # Each key sits under a comment line that documents it.
            assert re.search(rf"^  # .+\n  {name}: ", text, re.MULTILINE), f"{section}.{name}"
    for name, _, _ in describe(IndexSettings):
        assert re.search(rf"^#  .*\b{name}: .*# \S", text, re.MULTILINE), f"indices.{name}"


def test_example_index_entry_is_valid_when_uncommented() -> None:
    text = EXAMPLE.read_text()
    block = text[text.index("# indices:") : text.index("\nindices: []")]
    raw = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))
    settings = settings_from_dict(raw)
    assert settings.indices[0].name == "articles"
    assert settings.indices[0].text_fields == ("title", "text")


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 9000\n  protect_health: false\n")
    env = {
        "ES_EMBED_SERVER_PORT": "9100",
        "ES_EMBED_SERVER_PROTECT_HEALTH": "yes",
        "ES_EMBED_SERVER_API_KEYS": "a, b,,c",
        "ES_EMBED_BATCHING_MAX_BULK_BATCH_MS": "12.5",
    }
    s = load_settings(path, env=env)
    assert s.server.port == 9100 and s.server.protect_health is True
    assert s.server.api_keys == ("a", "b", "c")
    assert s.batching.max_bulk_batch_ms == 12.5


# (YAML text, environment, words the message must contain)
BAD_CONFIGS: list[tuple[str, dict[str, str], tuple[str, ...]]] = [
    ("server:\n  prot: 80\n", {}, ("server.'prot'", "did you mean 'port'")),
    ("sever:\n  port: 80\n", {}, ("'sever'", "did you mean 'server'")),
    ("server:\n  port: eighty\n", {}, ("server.port", "expected a number", "'eighty'")),
    ("server:\n  port: 8.5\n", {}, ("server.port", "whole number")),
    ("server:\n  port: 70000\n", {}, ("server.port", "at most 65535")),
    ("server:\n  max_inputs: 0\n", {}, ("server.max_inputs", "greater than 0")),
    ("server:\n  protect_health: maybe\n", {}, ("server.protect_health", "true or false")),
    ("server:\n  api_keys: secret\n", {}, ("server.api_keys", "expected a list")),
    ("model:\n  truncation: cut\n", {}, ("model.truncation", "truncate, error", "'cut'")),
    ("model:\n  dtype: fp8\n", {}, ("model.dtype",)),
    ("batching:\n  max_batch_tokens: -1\n", {}, ("batching.max_batch_tokens", "at least 0")),
    ("batching:\n  max_bulk_batch_ms: -5\n", {}, ("batching.max_bulk_batch_ms", "at least 0")),
    ("server: 8080\n", {}, ("server", "expected a mapping")),
    ("indices:\n  - text_fields: [a]\n", {}, ("indices[0].name", "missing")),
    ("indices:\n  - name: a\n    dims: 8\n", {}, ("indices[0] (a).dims", "32..4096")),
    (
        "indices:\n  - name: a\n    vectorfield: v\n",
        {},
        ("indices[0].'vectorfield'", "vector_field"),
    ),
    ("indices:\n  - name: a\n  - name: a\n", {}, ("'a'", "more than once")),
    ("server: [1\n", {}, ("not valid YAML",)),
    ("- a\n- b\n", {}, ("mapping at the top level",)),
    ("", {"ES_EMBED_SERVER_PORT": "x"}, ("ES_EMBED_SERVER_PORT", "expected a number")),
    ("", {"ES_EMBED_MODEL_TRUNCATION": "cut"}, ("ES_EMBED_MODEL_TRUNCATION", "truncate, error")),
]


@pytest.mark.parametrize(("text", "env", "words"), BAD_CONFIGS)
def test_bad_config_names_the_key(
    tmp_path: Path, text: str, env: dict[str, str], words: tuple[str, ...]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        load_settings(tmp_path / "nope.yaml", env={})


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("server:\n  prot: 80\n", ("did you mean 'port'",)),
        ("server:\n  api_keys_file: /nonexistent/keys\n", ("server.api_keys_file", "cannot read")),
        ("model:\n  device: tpu\n", ("model.device",)),
    ],
)
def test_serve_with_bad_config_prints_one_line_and_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    words: tuple[str, ...],
) -> None:
    for key in [k for k in os.environ if k.startswith("ES_EMBED_")]:
        monkeypatch.delenv(key)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err = run_cli(["serve", "--config", str(path)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0]


def test_serve_with_a_model_that_cannot_load_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"model:\n  name: {tmp_path / 'no-model'}\n  device: cpu\n")
    code, err = run_cli(["serve", "--config", str(path), "--port", "1"], capsys)
    assert code == 2
    assert err.splitlines()[-1].startswith("error: model.name: cannot load")


def test_serve_rejects_a_bad_port_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--port", "70000"])
    assert info.value.code == 2
    assert "--port: expected 1..65535, got 70000" in capsys.readouterr().err


def test_command_line_host_and_port_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from es_embed.cli.serve import settings_for

    monkeypatch.setenv("ES_EMBED_SERVER_PORT", "9100")
    args = cli.build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9200"])
    settings = settings_for(args)
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9200)
    assert (
        dataclasses.replace(settings.server, host="127.0.0.1", port=8080) == type(settings.server)()
    )


def test_cli_offers_the_five_commands() -> None:
    parser = cli.build_parser()
    for name in ("serve", "setup", "backfill", "ingest", "search"):
        with pytest.raises(SystemExit) as info:
            parser.parse_args([name, "--help"])
        assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["not_a_command"])
    assert info.value.code == 2
