"""Property tests of the settings loader (issue 14): whatever the file, the environment or a
mutation of a valid config holds, loading either succeeds or raises ConfigError with a
one-line message; every command then prints that one line and exits 2. Never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from es_embed import cli, config
from es_embed.config import ConfigError, Settings, load_settings, settings_from_dict

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # nothing written into the checkout
    suppress_health_check=[HealthCheck.too_slow],
)

# Values that sit on the rules' edges, mixed in with arbitrary ones.
TRICKY = [
    "", " ", "*", "a,b", "_embed", "_embed.x", "title", "text", "text.x", ".hidden", "Docs",
    "es-embed-state", "http://localhost:9200", "http://x", "not a url", "x\ud800", "a\nb",
    0, -1, 1, 10_000, 10_001, 65_536, 2**64, 10**400, 1e308, float("nan"), float("inf"), True, None,
]  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(TRICKY)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)

VALID: dict[str, Any] = {
    "model": {"name": "fake-encoder"},
    "elasticsearch": {"url": "http://localhost:9200"},
    "follow": {"page_size": 100, "state_index": "state"},
    "indices": [{"name": "docs", "dims": 64, "text_fields": ["title", "text"]}],
}
SECTION_KEYS = {
    name: [n for n, _, _ in config.describe(cls)] for name, cls in config._SECTIONS.items()
}
INDEX_KEYS = [n for n, _, _ in config.describe(config.IndexSettings)]


def assert_one_line_error(call: Any, *args: Any) -> Settings | None:
    try:
        return call(*args)  # type: ignore[no-any-return]
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None


def assert_safe(s: Settings) -> None:
    """What issue 14 refuses never gets through, whatever else was changed."""
    assert 1 <= s.follow.page_size <= 10_000
    assert math.isfinite(s.follow.poll_interval) and s.follow.poll_interval > 0
    names = [conf.name for conf in s.indices]
    assert len(set(names)) == len(names) and s.follow.state_index not in names
    for name in [*names, s.follow.state_index]:
        assert name and name == name.lower() and not set(name) & set("*?, ")
        assert name[0] not in "._-+"
    for conf in s.indices:
        for text in conf.text_fields:
            assert conf.vector_field != text and not text.startswith(conf.vector_field + ".")
        assert conf.vector_field.split(".")[0] != "_embed"


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config with one to three settings replaced (or added, misspelt ones too)."""
    raw: dict[str, Any] = yaml.safe_load(yaml.safe_dump(VALID))
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.sampled_from(TRICKY) if draw(st.booleans()) else VALUES)
        indices = raw.get("indices")
        if (
            draw(st.booleans())
            and isinstance(indices, list)
            and indices
            and isinstance(indices[0], dict)
        ):
            indices[0][draw(st.sampled_from([*INDEX_KEYS, "nme"]))] = value
        else:
            section = draw(st.sampled_from([*SECTION_KEYS, "indices"]))
            if section == "indices":
                raw["indices"] = value
            else:
                key = draw(st.sampled_from([*SECTION_KEYS[section], "portt"]))
                if not isinstance(raw.get(section), dict):
                    raw[section] = {}
                raw[section][key] = value
    return raw


@FUZZ
@given(mutated())
def test_a_mutated_config_loads_or_names_one_setting(raw: dict[str, Any]) -> None:
    loaded = assert_one_line_error(settings_from_dict, raw, {})
    if loaded is not None:
        assert_safe(loaded)


@FUZZ
@given(st.dictionaries(st.text(max_size=12) | st.sampled_from([*SECTION_KEYS, "indices"]), VALUES))
def test_any_structure_loads_or_names_one_setting(raw: dict[Any, Any]) -> None:
    assert_one_line_error(settings_from_dict, raw, {})


ENV_KEYS = [
    f"{config.ENV_PREFIX}{section.upper()}_{key.upper()}"
    for section, keys in SECTION_KEYS.items()
    for key in keys
]


@FUZZ
@given(st.dictionaries(st.sampled_from(ENV_KEYS), st.text(max_size=30), max_size=3))
def test_any_environment_loads_or_names_one_setting(env: dict[str, str]) -> None:
    loaded = assert_one_line_error(settings_from_dict, VALID, env)
    if loaded is not None:
        assert_safe(loaded)


# YAML text from its own tokens, so the scanner, parser and constructor are all reached.
YAML_TOKENS = [
    "server", "follow", "indices", "name", "port", "page_size", "url", ":", ": ", "- ", "\n",
    "  ", "[", "]", "{", "}", ",", "&a ", "*a", "<<", "!!str ", "!!binary ", "!!python/name:x",
    "? ", "|", ">", "'", '"', "\\u", "#", "%YAML 1.1\n", "---\n", "...", "1", "9" * 30, "0x",
    "2020-13-45", ".nan", ".inf", "~", "yes", "\t", "\x00", "é", "\ufeff",
]  # fmt: skip


@FUZZ
@given(st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=3), max_size=40))
def test_any_file_loads_or_names_one_problem(tokens: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text("".join(tokens), encoding="utf-8", errors="surrogatepass")
        assert_one_line_error(load_settings, path, {})


def _command(name: str, config: str) -> list[str]:
    extra = {"ingest": ["x.jsonl", "--index", "docs"], "search": ["q", "--index", "docs"]}
    return [name, *extra.get(name, []), "--config", config]


@settings(max_examples=20, deadline=None, database=None)
@given(mutated(), st.sampled_from([m.__name__.rsplit(".", 1)[1] for m in cli.COMMANDS]))
def test_every_command_refuses_a_bad_config_in_one_line(raw: dict[str, Any], command: str):
    try:
        settings_from_dict(raw, {})
    except ConfigError:
        pass
    else:
        assume(False)  # a config that loads would start the command for real
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=False), encoding="utf-8")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(_command(command, str(path)))
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, lines)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(config.ENV_PREFIX)]:
        monkeypatch.delenv(key)
