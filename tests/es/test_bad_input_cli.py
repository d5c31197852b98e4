"""The bad input matrix over the commands (issue 5 item 3), each run as a real process
(``python -m es_embed.cli ...``): exit code 2, one ``error: ...`` line naming the field, and
nothing written to Elasticsearch (neither the configured index nor the state index exists
afterwards, or the index holds no document).

Rows that live elsewhere (not repeated here): tests/unit/test_config.py (every config key's
type and range, in-process), tests/unit/test_config_checks.py (names, fields, URLs, bounds,
duplicate YAML keys, unreadable files, in-process), tests/unit/test_config_fuzz.py (any config
loads or is one line, exit 2), tests/es/test_search_cli.py (--k, --filter, --weights, unknown
index for search), tests/unit/test_follow_cli.py (ingest --dry-run bad line, unknown index
in-process), tests/es/test_ingest_load.py (bad line through the Loader).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from elasticsearch import Elasticsearch

from tests.faults.support import REPO, free_port, sidecar_env

pytestmark = [pytest.mark.es, pytest.mark.slow]

COMMANDS = ("serve", "setup", "backfill", "ingest", "search", "status")


@dataclass(frozen=True)
class Workspace:
    dir: Path
    index: str
    state: str
    good: Path  # a valid config
    jsonl: Path  # a valid JSONL file


@pytest.fixture(scope="module")
def ws(
    tmp_path_factory: pytest.TempPathFactory, es_url: str, es: Elasticsearch
) -> Iterator[Workspace]:
    d = tmp_path_factory.mktemp("bad-input-cli")
    index, state = f"badcli-{uuid.uuid4().hex[:8]}", f"badcli-state-{uuid.uuid4().hex[:8]}"
    raw = {
        # A model directory that does not exist: a row that got as far as loading the model
        # fails with another message, so it cannot pass by accident.
        "model": {"name": str(d / "no-model"), "device": "cpu"},
        "elasticsearch": {"url": es_url},
        "follow": {"state_index": state},
        "indices": [{"name": index, "dims": 64}],
    }
    good = d / "good.yaml"
    good.write_text(yaml.safe_dump(raw))
    jsonl = d / "good.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"_id": str(i), "text": f"t {i}"}) + "\n" for i in range(3))
    )
    yield Workspace(d, index, state, good, jsonl)
    es.options(ignore_status=404).indices.delete(index=f"{index},{state}")


def write(ws: Workspace, name: str, text: str | bytes) -> Path:
    path = ws.dir / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def cli(
    *args: str | os.PathLike[str] | bytes, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    cmd: list[str | bytes | os.PathLike[str]] = [sys.executable, "-m", "es_embed.cli", *args]
    proc = subprocess.run(
        cmd, cwd=REPO, env=sidecar_env(env), capture_output=True, timeout=60, check=False
    )
    return (
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def command_args(command: str, ws: Workspace, config: Path) -> list[str | os.PathLike[str]]:
    """The smallest valid invocation of each command, with ``config``."""
    table: dict[str, list[str | os.PathLike[str]]] = {
        "serve": ["serve", "--config", config],
        "setup": ["setup", "--config", config],
        "backfill": ["backfill", "--config", config],
        "ingest": ["ingest", ws.jsonl, "--index", ws.index, "--config", config],
        "search": ["search", "hello", "--index", ws.index, "--config", config, "--mode", "bm25"],
        "status": ["status", "--config", config],
    }
    return table[command]


def assert_refused(
    code: int, out: str, err: str, *needles: str, es: Elasticsearch, ws: Workspace
) -> None:
    assert code == 2, (code, out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    # Ours is one line "error: ..."; argparse's is "usage: ..." then "es-embed X: error: ...".
    # (Third-party progress bars, e.g. transformers loading weights, may come before it.)
    assert lines and (lines[-1].startswith("error: ") or ": error: " in lines[-1]), err
    assert [line for line in lines if "error:" in line] == [lines[-1]], err
    for needle in needles:
        assert needle in err, (needle, err)
    assert_nothing_written(es, ws)


def assert_nothing_written(es: Elasticsearch, ws: Workspace) -> None:
    if es.indices.exists(index=ws.index):
        es.indices.refresh(index=ws.index)
        assert es.count(index=ws.index)["count"] == 0
    assert not es.indices.exists(index=ws.state)


# Config rows, for every command: (name, config text, needles)
CONFIG_ROWS = [
    ("typo in a key", "elasticsearch:\n  urll: http://x\n", ("elasticsearch.'urll'", "'url'")),
    ("typo in a section", "folow:\n  page_size: 5\n", ("'folow'", "did you mean 'follow'")),
    ("index without a name", "indices:\n  - dims: 64\n", ("indices[0].name", "missing")),
    ("dims out of range", "indices:\n  - name: x\n    dims: 8\n", ("dims", "32..4096", "got 8")),
    ("wrong type", "follow:\n  page_size: many\n", ("follow.page_size", "expected a number")),
    ("not YAML", "server: [1\n", ("not valid YAML",)),
]

# Issue 14: settings that would destroy or flood data, and files that are not text. Each row
# runs through one command, in turn (a process start costs seconds): the rows above show every
# command refuses what the loader refuses, and these are all the loader's.
DATA_CONFIG_ROWS = [
    (
        "vector field is a text field",
        "indices:\n  - name: x\n    vector_field: text\n",
        ("indices[0] (x).vector_field", "'text'", "also a text field"),
    ),
    (
        "vector field is _embed",
        "indices:\n  - name: x\n    vector_field: _embed\n",
        ("vector_field", "'_embed'"),
    ),
    ("wildcard index name", "indices:\n  - name: '*'\n", ("indices[0].name", "'*'", "wildcards")),
    ("comma in index name", "indices:\n  - name: a,b\n", ("indices[0].name", "','")),
    ("hidden index name", "indices:\n  - name: .x\n", ("indices[0].name", "starts with '.'")),
    (
        "state index followed",
        "follow:\n  state_index: x\nindices:\n  - name: x\n",
        ("indices[0] (x).name", "follow.state_index"),
    ),
    (
        "page size past the result window",
        "follow:\n  page_size: 100000\n",
        ("follow.page_size", "at most 10000", "max_result_window"),
    ),
    (
        "not a URL",
        "elasticsearch:\n  url: not a url\n",
        ("elasticsearch.url", "'not a url'"),
    ),
    (
        "URL without a port",
        "elasticsearch:\n  url: http://a:9200,http://b\n",
        ("elasticsearch.url", "'http://b'", "port"),
    ),
    (
        "duplicate key",
        "follow:\n  page_size: 5\n  page_size: 6\n",
        ("duplicate key 'page_size'", "lines 2 and 3"),
    ),
    ("binary file", b"\x88\x99\x00\xff", ("cannot read config file", "not UTF-8 text")),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", COMMANDS)
def test_bad_config_file(command: str, ws: Workspace, es: Elasticsearch) -> None:
    for name, text, needles in CONFIG_ROWS:
        config = write(ws, f"{command}-{name.replace(' ', '-')}.yaml", text)
        args = command_args(command, ws, config)
        code, out, err = cli(*args)
        assert_refused(code, out, err, *needles, es=es, ws=ws)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("command", "row"),
    [(COMMANDS[i % len(COMMANDS)], row) for i, row in enumerate(DATA_CONFIG_ROWS)],
    ids=[row[0] for row in DATA_CONFIG_ROWS],
)
def test_config_that_would_destroy_or_flood_data(
    command: str, row: tuple[str, str | bytes, tuple[str, ...]], ws: Workspace, es: Elasticsearch
) -> None:
    name, text, needles = row
    config = write(ws, f"{command}-{name.replace(' ', '-')}.yaml", text)
    code, out, err = cli(*command_args(command, ws, config))
    assert "Traceback" not in err
    assert_refused(code, out, err, *needles, es=es, ws=ws)


@pytest.mark.timeout(60)
def test_serve_with_a_binary_api_keys_file(ws: Workspace, es: Elasticsearch) -> None:
    keys = write(ws, "keys.bin", b"\x88\x99\x00\xffkey\n")
    raw = yaml.safe_load(ws.good.read_text())
    raw["server"] = {"api_keys_file": str(keys)}
    config = write(ws, "binary-keys.yaml", yaml.safe_dump(raw))
    code, out, err = cli("serve", "--config", config)
    assert "Traceback" not in err
    assert_refused(code, out, err, "server.api_keys_file", "not UTF-8 text", es=es, ws=ws)


@pytest.mark.timeout(120)
def test_backfill_gives_up_while_elasticsearch_is_unreachable(
    ws: Workspace, with_model: Path
) -> None:
    # serve waits out any outage; a one-shot backfill gives up after follow.give_up_seconds.
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    raw = yaml.safe_load(with_model.read_text())
    raw["elasticsearch"] = {"url": url, "request_timeout": 2}
    raw["follow"] = {**raw["follow"], "give_up_seconds": 1, "max_backoff": 0.5}
    config = write(ws, "unreachable.yaml", yaml.safe_dump(raw))
    code, out, err = cli("backfill", "--config", config)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (code, out, err)
    assert "Traceback" not in err
    assert lines[-1].startswith(f"error: cannot reach Elasticsearch at {url}"), err
    assert [line for line in lines if "error:" in line] == [lines[-1]], err
    assert any("retrying in" in line for line in lines), err  # it did wait before giving up


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", COMMANDS)
def test_missing_config_file(command: str, ws: Workspace, es: Elasticsearch) -> None:
    code, out, err = cli(*command_args(command, ws, ws.dir / "nope.yaml"))
    assert_refused(code, out, err, "cannot read config file", "nope.yaml", es=es, ws=ws)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["setup", "backfill", "ingest", "search", "status"])
def test_unknown_index(command: str, ws: Workspace, es: Elasticsearch) -> None:
    args = [str(a) for a in command_args(command, ws, ws.good)]
    if "--index" in args:
        args[args.index("--index") + 1] = "nope"
    else:
        args += ["--index", "nope"]
    code, out, err = cli(*args)
    assert_refused(code, out, err, "'nope'", ws.index, es=es, ws=ws)


# JSONL rows for ingest: (name, file bytes, needles). The first two lines are good, so a
# loader that wrote as it read would leave documents behind.
GOOD_LINES = b'{"_id": "a", "text": "first"}\n{"_id": "b", "text": "second"}\n'
JSONL_ROWS = [
    ("truncated JSON", GOOD_LINES + b'{"_id": "c", "text": "thi\n', (":3:", "not valid JSON")),
    ("an array", GOOD_LINES + b'["c", "third"]\n', (":3:", "expected a JSON object, got list")),
    ("invalid UTF-8", GOOD_LINES + b'{"_id": "c", "text": "caf\xe9"}\n', (":3:", "not valid")),
    ("no id", GOOD_LINES + b'{"text": "third"}\n', (":3:", "missing or empty id field '_id'")),
    ("metadata field", GOOD_LINES + b'{"_id": "c", "_source": 1}\n', (":3:", "'_source'")),
    (
        "lone surrogate",
        GOOD_LINES + b'{"_id": "c", "text": "x\\ud800y"}\n',
        (":3:", "surrogate"),
    ),  # fmt: skip
]


@pytest.fixture(scope="module")
def with_model(ws: Workspace, tiny_qwen_dir: Path) -> Path:
    """The good config with a real (tiny) model: ingest loads it before reading the file."""
    raw = yaml.safe_load(ws.good.read_text())
    raw["model"] = {"name": str(tiny_qwen_dir), "device": "cpu"}
    path = ws.dir / "with-model.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "data", "needles"), JSONL_ROWS, ids=[r[0] for r in JSONL_ROWS])
def test_ingest_bad_line(
    name: str,
    data: bytes,
    needles: tuple[str, ...],
    ws: Workspace,
    with_model: Path,
    es: Elasticsearch,
) -> None:
    path = write(ws, f"bad-{name.replace(' ', '-')}.jsonl", data)
    # --dry-run (no model) and the real run (model loaded, index set up) refuse alike.
    for extra in (["--dry-run"], []):
        code, out, err = cli("ingest", path, "--index", ws.index, "--config", with_model, *extra)
        assert_refused(code, out, err, *needles, es=es, ws=ws)


# Argument rows: (name, argv after the command's config, needles)
ARG_ROWS = [
    ("serve port 0", ["serve", "--port", "0"], ("--port", "1..65535")),
    ("serve port text", ["serve", "--port", "http"], ("--port", "'http'")),
    ("serve api key flag", ["serve", "--api-key", "s3cret"], ("unrecognized arguments",)),
    ("search empty query", ["search", "", "--index", "{index}"], ("query", "non-empty")),
    ("search blank query", ["search", "  ", "--index", "{index}"], ("query", "non-empty")),
    (
        "search bad mode",
        ["search", "x", "--index", "{index}", "--mode", "dense"],
        ("--mode", "'dense'"),
    ),  # fmt: skip
    (
        "ingest chunk size",
        ["ingest", "{jsonl}", "--index", "{index}", "--chunk-docs", "0"],
        ("--chunk-docs",),
    ),  # fmt: skip
    (
        "ingest missing file",
        ["ingest", "{dir}/missing.jsonl", "--index", "{index}"],
        ("missing.jsonl",),
    ),  # fmt: skip
    ("setup index typo flag", ["setup", "--indx", "x"], ("unrecognized arguments", "--indx")),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("name", "argv", "needles"), ARG_ROWS, ids=[r[0] for r in ARG_ROWS])
def test_bad_arguments(
    name: str, argv: list[str], needles: tuple[str, ...], ws: Workspace, es: Elasticsearch
) -> None:
    args = [a.format(index=ws.index, jsonl=ws.jsonl, dir=ws.dir) for a in argv]
    code, out, err = cli(*args, "--config", ws.good)
    assert_refused(code, out, err, *needles, es=es, ws=ws)


@pytest.mark.timeout(60)
def test_search_query_with_invalid_utf8_argument(ws: Workspace, es: Elasticsearch) -> None:
    # A shell passes bytes; Python turns undecodable ones into lone surrogates.
    code, out, err = cli("search", b"caf\xe9", "--index", ws.index, "--config", ws.good,
                         "--mode", "bm25")  # fmt: skip
    assert_refused(code, out, err, "query", "surrogate", es=es, ws=ws)
