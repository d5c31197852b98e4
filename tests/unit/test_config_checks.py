"""Settings that would destroy or flood data are refused (issue 14): a vector field that
overwrites text, index names that match more than one index or the state index, pages past
the result window, URLs the client cannot use, numbers out of range, duplicate YAML keys,
files that are not UTF-8 text. Each refusal is one line naming the setting."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from es_embed import cli
from es_embed.config import _SECTIONS, ConfigError, describe, load_settings, settings_from_dict
from es_embed.config_checks import BOUNDS, redact_url, split_urls, url_problem
from es_embed.elastic.client import build_client, client_kwargs


def index(**kw: Any) -> dict[str, Any]:
    return {"indices": [{"name": "docs", **kw}]}


# (raw settings, words the one-line message must contain)
REFUSED: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    # the vector field would overwrite text, or our _embed record
    (index(vector_field="text"), ("indices[0] (docs).vector_field", "'text'", "also a text")),
    (index(text_fields=["body"], vector_field="body.vec"), ("vector_field", "'body'", "inside")),
    (index(text_fields=["a.b"], vector_field="a"), ("vector_field", "'a.b'", "overwrite")),
    (index(vector_field="_embed"), ("vector_field", "'_embed'", "hash")),
    (index(vector_field="_embed.vector"), ("vector_field", "'_embed.vector'")),
    (index(vector_field="a..b"), ("vector_field", "not a field path")),
    (index(vector_field=""), ("vector_field", "not a field path")),
    (index(text_fields=["title", "_embed.hash"]), ("text_fields[1]", "'_embed.hash'")),
    # names that match every index, several, hidden ones, or are not index names at all
    ({"indices": [{"name": "*"}]}, ("indices[0].name", "'*'", "wildcards")),
    ({"indices": [{"name": "logs-?"}]}, ("indices[0].name", "'?'")),
    ({"indices": [{"name": "a,b"}]}, ("indices[0].name", "','", "commas")),
    ({"indices": [{"name": "my docs"}]}, ("indices[0].name", "' '")),
    ({"indices": [{"name": 'a"b'}]}, ("indices[0].name", "'\"'")),
    ({"indices": [{"name": "a#b"}]}, ("indices[0].name", "'#'")),
    ({"indices": [{"name": "a\\b"}]}, ("indices[0].name",)),
    ({"indices": [{"name": "x\ny"}]}, ("indices[0].name", "'x\\ny'")),
    ({"indices": [{"name": "remote:docs"}]}, ("indices[0].name", "':'")),
    ({"indices": [{"name": ".kibana"}]}, ("indices[0].name", "starts with '.'")),
    ({"indices": [{"name": "_all"}]}, ("indices[0].name", "starts with '_'")),
    ({"indices": [{"name": "-docs"}]}, ("indices[0].name", "starts with '-'")),
    ({"indices": [{"name": "+docs"}]}, ("indices[0].name", "starts with '+'")),
    ({"indices": [{"name": "Docs"}]}, ("indices[0].name", "uppercase")),
    ({"indices": [{"name": "a" * 256}]}, ("indices[0].name", "255 bytes")),
    ({"indices": [{"name": ".."}]}, ("indices[0].name", "not an index name")),
    ({"indices": [{"name": "ok"}, {"name": "ok"}]}, ("'ok'", "more than once")),
    (
        {"follow": {"state_index": "docs"}, **index()},
        ("indices[0] (docs).name", "follow.state_index"),
    ),
    ({"indices": [{"name": "es-embed-state"}]}, ("'es-embed-state'", "follow.state_index")),
    ({"follow": {"state_index": "*"}}, ("follow.state_index", "'*'")),
    ({"follow": {"state_index": "State"}}, ("follow.state_index", "uppercase")),
    # numbers: the result window, bounds, non-finite and huge values
    ({"follow": {"page_size": 100000}}, ("follow.page_size", "at most 10000", "max_result_window")),
    ({"follow": {"page_size": 0}}, ("follow.page_size", "greater than 0")),
    ({"follow": {"give_up_seconds": 0}}, ("follow.give_up_seconds", "greater than 0")),
    ({"follow": {"max_backoff": -1}}, ("follow.max_backoff", "greater than 0")),
    ({"follow": {"poll_interval": 1e9}}, ("follow.poll_interval", "at most 604800")),
    ({"follow": {"poll_interval": float("nan")}}, ("follow.poll_interval", "finite", "nan")),
    ({"follow": {"max_backoff": float("inf")}}, ("follow.max_backoff", "finite", "inf")),
    ({"server": {"port": 10**5000}}, ("server.port", "too large")),
    ({"server": {"drain_seconds": -1}}, ("server.drain_seconds", "at least 0")),
    ({"elasticsearch": {"request_timeout": 0}}, ("elasticsearch.request_timeout",)),
    ({"batching": {"probe_interval_seconds": 0}}, ("batching.probe_interval_seconds",)),
    ({"batching": {"retry_after_seconds": -1}}, ("batching.retry_after_seconds", "at least 0")),
    ({"batching": {"query_anticipation_ms": -5}}, ("batching.query_anticipation_ms",)),
    # URLs: each of a comma-separated list, shown without a password
    ({"elasticsearch": {"url": "not a url"}}, ("elasticsearch.url", "'not a url'", "http://")),
    ({"elasticsearch": {"url": "localhost:9200"}}, ("elasticsearch.url", "'localhost:9200'")),
    ({"elasticsearch": {"url": "ftp://es:9200"}}, ("elasticsearch.url", "'ftp://es:9200'")),
    ({"elasticsearch": {"url": "http://es"}}, ("elasticsearch.url", "'http://es'", "port")),
    ({"elasticsearch": {"url": "http://es:0"}}, ("elasticsearch.url", "port")),
    ({"elasticsearch": {"url": "http://es:99999"}}, ("elasticsearch.url", "'http://es:99999'")),
    ({"elasticsearch": {"url": "http://es:92a0"}}, ("elasticsearch.url", "not a valid URL")),
    ({"elasticsearch": {"url": "http://:9200"}}, ("elasticsearch.url", "no valid host")),
    ({"elasticsearch": {"url": "http://e s:9200"}}, ("elasticsearch.url", "no valid host")),
    ({"elasticsearch": {"url": " , "}}, ("elasticsearch.url", "at least one URL")),
    (
        {"elasticsearch": {"url": "http://a:9200,http://b"}},
        ("elasticsearch.url", "'http://b'"),
    ),
    (
        {"elasticsearch": {"url": "http://u:s3cret@es:70000"}},
        ("elasticsearch.url", "'http://u:***@es:70000'"),
    ),
    # files and text
    ({"elasticsearch": {"ca_certs": "/nonexistent/ca.pem"}}, ("elasticsearch.ca_certs",)),
    ({"model": {"name": "x\ud800"}}, ("model.name", "lone surrogate")),
]


@pytest.mark.parametrize(("raw", "words"), REFUSED, ids=[w[0] for _, w in REFUSED])
def test_refused_naming_the_setting_in_one_line(raw: dict[str, Any], words: tuple[str, ...]):
    with pytest.raises(ConfigError) as info:
        settings_from_dict(raw)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    assert "s3cret" not in message


ACCEPTED: list[dict[str, Any]] = [
    index(text_fields=["body"], vector_field="body_vector"),  # a prefix, not a path
    index(text_fields=["meta.title", "body"], vector_field="vec.main"),
    index(text_fields=["embedding_text"], vector_field="embedding"),
    {"indices": [{"name": "logs-app.prod_2024"}, {"name": "docs@2024"}]},
    {"indices": [{"name": "日本語"}]},  # non-ASCII lowercase is fine in Elasticsearch
    {"follow": {"page_size": 10000, "give_up_seconds": 0.5}},
    {"server": {"drain_seconds": 0}, "batching": {"query_anticipation_ms": 0}},
    {"elasticsearch": {"url": "https://es.example.com"}},  # https defaults to 443
    {"elasticsearch": {"url": "http://[::1]:9200, https://u:p@h:9243/prefix"}},
    {"elasticsearch": {"url": "HTTP://ES:9200"}},
]


def test_every_numeric_setting_has_a_range() -> None:
    # A new number without a range would take 0, -1 or 1e300 silently: decide its range.
    numeric = {
        f"{section}.{name}"
        for section, cls in _SECTIONS.items()
        for name, default, _ in describe(cls)
        if isinstance(default, int | float) and not isinstance(default, bool)
    }
    assert numeric == set(BOUNDS)


@pytest.mark.parametrize("raw", ACCEPTED, ids=[repr(r)[:60] for r in ACCEPTED])
def test_accepted(raw: dict[str, Any]) -> None:
    settings_from_dict(raw)


@pytest.mark.parametrize("raw", [r for r in ACCEPTED if "elasticsearch" in r])
async def test_every_url_we_accept_the_client_accepts(raw: dict[str, Any]) -> None:
    settings = settings_from_dict(raw).elasticsearch
    client = build_client(settings)
    await client.close()
    assert len(client_kwargs(settings)["hosts"]) == len(split_urls(settings.url))


async def test_the_client_refuses_what_we_refuse() -> None:
    # The ground truth for the URL rule: the client itself fails on each (or, for ftp,
    # would speak HTTP to an FTP port); ours says so at load time instead.
    from elasticsearch import AsyncElasticsearch

    for url in ("not a url", "http://es", "http://es:99999", "http://e s:9200"):
        assert url_problem(url)
        with pytest.raises(ValueError):
            AsyncElasticsearch(hosts=[url])


def test_a_ca_file_that_is_not_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    settings = settings_from_dict(
        {"elasticsearch": {"url": "https://es:9200", "ca_certs": str(ca)}}
    )
    with pytest.raises(ConfigError, match=f"^elasticsearch.ca_certs: '{ca}'"):
        asyncio.run(_build_and_close(settings))


async def _build_and_close(settings: Any) -> None:
    await build_client(settings.elasticsearch).close()


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("https://user:pw@es:9200/x") == "https://user:***@es:9200/x"
    assert redact_url("https://es:9200") == "https://es:9200"
    assert redact_url("https://user@es:9200") == "https://user@es:9200"


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("ES_EMBED_FOLLOW_PAGE_SIZE", "nan", "ES_EMBED_FOLLOW_PAGE_SIZE: expected a number"),
        ("ES_EMBED_FOLLOW_PAGE_SIZE", "20000", "follow.page_size: must be at most 10000"),
        (
            "ES_EMBED_FOLLOW_POLL_INTERVAL",
            "nan",
            "ES_EMBED_FOLLOW_POLL_INTERVAL: expected a finite",
        ),
        (
            "ES_EMBED_FOLLOW_POLL_INTERVAL",
            "1e999",
            "ES_EMBED_FOLLOW_POLL_INTERVAL: expected a finite",
        ),
        ("ES_EMBED_ELASTICSEARCH_URL", "es:9200", "elasticsearch.url: 'es:9200'"),
    ],
)
def test_environment_values_are_checked_too(key: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({}, {key: value})
    assert words in str(info.value)


# ---- the file: duplicate keys, bad YAML values, bad bytes ------------------------------------

# (YAML text, words)
BAD_FILES = [
    ("server:\n  port: 1\n  host: x\n  port: 2\n", ("'port'", "lines 2 and 4", "line 4 column 3")),
    ("follow: {page_size: 5, page_size: 6}\n", ("'page_size'", "twice on line 1")),
    ("server:\n  port: 1\nserver:\n  port: 2\n", ("'server'", "lines 1 and 3")),
    ("indices:\n  - name: a\n    name: b\n", ("'name'", "lines 2 and 3")),
    ("server:\n  port: " + "9" * 5000 + "\n", ("line 2 column 9", "digits")),
    ("server:\n  host: 2020-13-45\n", ("line 2", "month")),
    ("[" * 100_000, ("nested too deeply",)),
]


@pytest.mark.parametrize(("text", "words"), BAD_FILES, ids=[t[:30] for t, _ in BAD_FILES])
def test_bad_yaml_is_one_line_naming_where(tmp_path: Path, text: str, words: tuple[str, ...]):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, (word, message)


def test_merge_keys_may_override_what_they_merge(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "indices:\n  - &base {name: a, dims: 64, text_fields: [title]}\n"
        "  - <<: *base\n    name: b\n"
    )
    settings = load_settings(path, env={})
    assert [(c.name, c.dims) for c in settings.indices] == [("a", 64), ("b", 64)]


def test_a_self_referencing_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  aliases: &x [a, *x]\n")
    with pytest.raises(ConfigError, match=r"model.aliases\[1\]: expected a string"):
        load_settings(path, env={})


def test_a_binary_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"server:\n  host: caf\xe9\n")
    with pytest.raises(
        ConfigError, match=r"cannot read config file .*: not UTF-8 text \(byte 19: 0xe9\)"
    ):
        load_settings(path, env={})


# ---- server.api_keys_file, through es-embed serve -------------------------------------------


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\x88\x99\x00binary", ("server.api_keys_file", "not UTF-8 text (byte 0: 0x88)")),
        (None, ("server.api_keys_file", "cannot read", "No such file")),
        ("dir", ("server.api_keys_file", "cannot read", "directory")),
    ],
)
def test_serve_with_an_unreadable_keys_file_prints_one_line_and_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: bytes | str | None,
    words: tuple[str, ...],
) -> None:
    for key in [k for k in os.environ if k.startswith("ES_EMBED_")]:
        monkeypatch.delenv(key)
    keys = tmp_path / "keys"
    if content == "dir":
        keys.mkdir()
    elif isinstance(content, bytes):
        keys.write_bytes(content)
    config = tmp_path / "c.yaml"
    config.write_text(f"server:\n  api_keys_file: {keys}\nmodel:\n  name: {tmp_path / 'none'}\n")
    assert cli.main(["serve", "--config", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines)
