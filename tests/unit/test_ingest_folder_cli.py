"""``es-embed ingest DIR`` as a command: the fake encoder behind the real service and a bulk
API that keeps what it was sent; what cannot be parsed is skipped by name, or (--strict)
stops the run before the model loads or anything is written."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.cli import ingest
from es_embed.config import Settings
from tests.fakes import FakeEncoder, ScriptedBulk
from tests.files_support import write_pdf, write_text
from tests.service_support import service_standin


class Bulk(ScriptedBulk):
    """A bulk API that accepts every document and keeps what it was sent."""

    @property
    def operations(self) -> list[dict[str, Any]]:
        return [action for request in self.actions for action in request]

    def documents(self) -> dict[str, dict[str, Any]]:
        return dict(sorted(self.sources.items()))


class Fakes:
    def __init__(self) -> None:
        self.bulk = Bulk()
        self.models_loaded = 0


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Fakes:
    state = Fakes()

    def load(_: Settings) -> None:
        state.models_loaded += 1

    @contextlib.asynccontextmanager
    async def client(_: Settings) -> AsyncIterator[AsyncElasticsearch]:
        es = state.bulk.client()
        try:
            yield es
        finally:
            await es.close()

    monkeypatch.setattr(ingest, "embedding_service", service_standin(FakeEncoder(), on_load=load))
    monkeypatch.setattr(ingest, "es_client", client)
    return state


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write_text(root / "guide.md", "# Guide\n\nTurn **left**.")
    write_text(root / "web" / "page.html", "<title>Page</title><p>Hello</p>")
    write_pdf(root / "manual.pdf", ["First page.", "Second page."], title="Manual")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really")
    (root / "photo.png").write_bytes(b"\x89PNG")
    return root


def run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str, fields: str = "title, text"
) -> tuple[int, str, str]:
    config = tmp_path / "es-embed.yaml"
    config.write_text(f"indices:\n  - name: docs\n    dims: 32\n    text_fields: [{fields}]\n")
    parser = argparse.ArgumentParser(prog="es-embed")
    ingest.register(parser.add_subparsers())
    args = parser.parse_args(["ingest", *argv, "--index", "docs", "--config", str(config)])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_folder_loads_one_document_per_file_and_skips_the_broken_one_by_name(
    fakes: Fakes, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, tmp_path, str(folder))
    assert code == 0
    assert "skipped broken.pdf: not a readable PDF (" in err
    assert f"{folder}: 3 files to load, 1 cannot be parsed, 1 of other types (.png 1)" in err
    docs = fakes.bulk.documents()
    assert list(docs) == ["guide.md", "manual.pdf", "web/page.html"]
    assert docs["manual.pdf"]["title"] == "Manual"
    assert docs["manual.pdf"]["text"] == "First page.\n\nSecond page."
    assert docs["web/page.html"]["path"] == "web/page.html"
    assert all(len(d["embedding"]) == 32 and d["_embed"]["hash"] for d in docs.values())


def test_other_text_fields_get_the_title_first_and_the_body_second(
    fakes: Fakes, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(capsys, tmp_path, str(folder), fields="headline, body")
    assert code == 0
    doc = fakes.bulk.documents()["guide.md"]
    assert {k: doc[k] for k in ("path", "headline", "body")} == {
        "path": "guide.md",
        "headline": "Guide",
        "body": "Guide\n\nTurn left.",
    }
    assert "title" not in doc and "text" not in doc


def test_strict_stops_on_the_broken_file_before_the_model_loads_and_writes_nothing(
    fakes: Fakes, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "zz.txt").write_bytes(b"\xff")
    code, out, err = run(capsys, tmp_path, str(folder), "--strict")
    assert code == 2 and out == ""
    assert err.startswith("error: broken.pdf: not a readable PDF (") and err.count("\n") == 1
    assert "1 more files cannot be parsed" in err
    assert fakes.models_loaded == 0 and fakes.bulk.operations == []


def test_dry_run_lists_what_would_be_loaded(
    fakes: Fakes, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, tmp_path, str(folder), "--dry-run")
    assert code == 0 and "skipped broken.pdf" in err
    assert out.splitlines() == [
        "guide.md\tGuide\t17 characters",
        "manual.pdf\tManual\t25 characters",
        "web/page.html\tPage\t5 characters",
        f"{folder}: 3 files to load, 1 cannot be parsed, 1 of other types (.png 1)",
    ]
    assert fakes.models_loaded == 0 and fakes.bulk.operations == []


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--fields", "title"], "--id-field and --fields apply to a JSONL file"),
        (["--id-field", "id"], "--id-field and --fields apply to a JSONL file"),
    ],
)
def test_jsonl_options_on_a_folder_are_bad_input(
    fakes: Fakes,
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    code, _, err = run(capsys, tmp_path, str(folder), *extra)
    assert code == 2 and err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_a_folder_with_nothing_to_load_and_a_missing_path_are_bad_input(
    fakes: Fakes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    write_text(empty / "a.docx", "x")
    code, _, err = run(capsys, tmp_path, str(empty))
    kinds = ".txt, .md, .markdown, .html, .htm, .pdf"
    assert code == 2 and err == f"error: {empty}: no file to load (looked for {kinds})\n"
    missing = tmp_path / "nowhere"
    code, _, err = run(capsys, tmp_path, str(missing))
    assert code == 2 and err == f"error: cannot read {missing}: no such file or folder\n"
    assert fakes.models_loaded == 0
