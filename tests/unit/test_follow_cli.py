"""The follow commands' argument handling: exit 2 and one line for bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from es_embed.cli import backfill, ingest, setup


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="es-embed")
    sub = p.add_subparsers(dest="command")
    for module in (setup, backfill, ingest):
        module.register(sub)
    return p


def test_each_command_registers_with_a_func() -> None:
    p = parser()
    assert p.parse_args(["setup", "--pipeline"]).func is setup.main
    assert p.parse_args(["backfill", "--index", "a"]).func is backfill.main
    args = p.parse_args(["ingest", "f.jsonl", "--index", "a", "--fields", "title,text"])
    assert args.func is ingest.main and args.fields == "title,text"


def test_ingest_dry_run_reports_the_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("indices:\n  - name: docs\n    dims: 32\n")
    data = tmp_path / "d.jsonl"
    data.write_text('{"_id": "1", "title": "ok"}\n{"_id": "2", "title": \n')
    args = parser().parse_args(["ingest", str(data), "--index", "docs", "--config", str(config),
                                "--dry-run"])  # fmt: skip
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{data}:2:" in err[0]
    data.write_text('{"_id": "1", "title": "ok"}\n')
    assert args.func(args) == 0
    assert "1 documents, all valid" in capsys.readouterr().out


def test_an_unknown_index_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("indices:\n  - name: docs\n")
    args = parser().parse_args(["ingest", "x.jsonl", "--index", "nope", "--config", str(config)])
    assert args.func(args) == 2
    assert "'nope' is not configured" in capsys.readouterr().err
