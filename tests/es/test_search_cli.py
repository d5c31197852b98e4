"""``es-embed search`` on a real node: table, --json, --explain, bad input, and the
acceptance test: the --dev-console text, pasted as it is, gives the CLI's answer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from es_embed.cli import search as cli
from es_embed.config import IndexSettings, ModelSettings
from es_embed.embed.protocol import Encoder
from tests.es.search_support import BOTH, RARE, corpus
from tests.search_helpers import (
    parse_dev_console,
    reference_auto,
    reference_linear,
    reference_rrf,
    send,
)
from tests.service_support import service_standin

pytestmark = pytest.mark.es
__all__ = ["corpus"]  # fixture


@pytest.fixture
def config(tmp_path: Path, es_url: str, corpus: IndexSettings) -> Path:
    path = tmp_path / "es-embed.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "elasticsearch": {"url": es_url},
                "model": {"name": "minilm"},
                "indices": [
                    {
                        "name": corpus.name,
                        "text_fields": ["title", "text"],
                        "vector_field": "embedding",
                    }
                ],
            }
        )
    )
    return path


@pytest.fixture(autouse=True)
def in_process_minilm(monkeypatch: pytest.MonkeyPatch, minilm_encoder: Encoder) -> list[str]:
    """The CLI loads settings.model; here that is the session's MiniLM (no second copy)."""
    loaded: list[str] = []
    model = ModelSettings(name="minilm")
    standin = service_standin(
        minilm_encoder, model=model, on_load=lambda s: loaded.append(s.model.name)
    )
    monkeypatch.setattr(cli, "embedding_service", standin)
    return loaded


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="es-embed")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_table_and_explain(
    config: Path, corpus: IndexSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["search", BOTH, "--index", corpus.name, "--config", str(config), "--k", "3"]
    code, out, _ = run([*argv, "--fusion", "rrf", "--explain"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("3 hits  (hybrid, rrf;")
    ranked = [ln.split()[2] for ln in lines if ln[:3].strip().rstrip(".").isdigit()]
    assert set(ranked[:2]) == {"cat", "code"}
    assert "1/(60+1)" in out and "total" in out and "not in the leg's first 100 hits -> 0" in out
    # no --fusion: auto, the default
    code, out, _ = run([*argv, "--explain"], capsys)
    assert code == 0 and out.splitlines()[0].startswith("3 hits  (hybrid, auto;")
    assert "evidence above the leg's floor" in out and "x weight 0.5 =" in out


def test_bm25_needs_no_model(
    config: Path,
    corpus: IndexSettings,
    capsys: pytest.CaptureFixture[str],
    in_process_minilm: list[str],
) -> None:
    code, out, _ = run(
        [
            "search",
            RARE,
            "--index",
            corpus.name,
            "--config",
            str(config),
            "--mode",
            "bm25",
            "--json",
        ],
        capsys,
    )
    assert code == 0 and in_process_minilm == []
    answer = json.loads(out)
    assert [h["_id"] for h in answer["hits"]] == ["code"]
    assert answer["hits"][0]["legs"]["bm25"]["rank"] == 1 and answer["embed_ms"] == 0
    assert set(answer) == {"hits", "took_ms", "embed_ms"}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--k", "0"], "k must be"),
        (["--filter", "{bad"], "--filter is not valid JSON"),
        (["--weights", "bm25=x"], "--weights"),
        (["--index", "nope"], "'nope'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    config: Path,
    corpus: IndexSettings,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    code, out, err = run(
        ["search", "x", "--index", corpus.name, "--config", str(config), *extra], capsys
    )
    assert code == 2 and out == ""
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "extra",
    [
        ["--mode", "bm25"],
        ["--mode", "knn"],
        ["--fusion", "sum"],
        ["--fusion", "rrf"],
        ["--fusion", "linear", "--weights", "bm25=0.6,knn=1.4"],
        ["--weights", "bm25=0.6,knn=1.4"],
    ],
    ids=["bm25", "knn", "sum", "rrf", "linear", "auto"],
)
def test_dev_console_text_reproduces_the_cli_answer(
    config: Path,
    corpus: IndexSettings,
    es: Any,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
) -> None:
    base = [
        "search",
        BOTH,
        "--index",
        corpus.name,
        "--config",
        str(config),
        "--k",
        "10",
        "--window",
        "14",
        *extra,
    ]
    code, console, _ = run([*base, "--dev-console"], capsys)
    assert code == 0
    code, out, _ = run([*base, "--json"], capsys)
    assert code == 0
    answer = [(h["_id"], h["_score"]) for h in json.loads(out)["hits"]]
    assert len(answer) == (1 if "bm25" in extra else 10)  # one document has a query word
    requests = parse_dev_console(console)
    pasted = [send(es, method, path, body)["hits"]["hits"] for method, path, body in requests]
    if len(pasted) == 1:  # one request: its hits are the answer
        assert [(h["_id"], h["_score"]) for h in pasted[0]] == answer
        return
    # Client-side fusion: redo the formula the text states on the legs it printed.
    legs = [[(h["_id"], h["_score"]) for h in leg] for leg in pasted]
    if "--fusion" in extra and "linear" in extra:
        assert "0.6 * mm_bm25 + 1.4 * mm_knn" in console
        expected = reference_linear(legs, [0.6, 1.4], window=14)
    elif "--fusion" not in extra:  # auto, the default
        assert "score = 0.6 * (e_bm25 - f_bm25) + 0.7 * (e_knn - f_knn)" in console
        expected = reference_auto(legs, [0.6, 0.7], [0.0, 0.5], window=14)
    else:
        assert "1 / (60 + r)" in console and "first 14 hits" in console
        expected = reference_rrf([[h["_id"] for h in leg] for leg in pasted], 60, window=14)
    assert [doc for doc, _ in expected[:10]] == [doc for doc, _ in answer]
    assert [s for _, s in expected[:10]] == pytest.approx([s for _, s in answer])
