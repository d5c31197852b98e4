"""Acceptance (issue 10, Deliver 5): a multi-page PDF, a Markdown file and an HTML page made
here are loaded by ``es-embed ingest DIR`` into a real node with MiniLM vectors, and each is
the top kNN (and hybrid) hit for a question about its last page or section.

One vector per document: MiniLM reads 256 tokens, so every file here stays well inside that
(the test checks it), and the fact each question asks about sits at the very end. Each
distractor is a sibling of one of the three files without its last page or section, so a
loader that lost the end of a file would leave it no better a match than its sibling.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from elasticsearch import AsyncElasticsearch, Elasticsearch

from es_embed.cli import ingest
from es_embed.config import IndexSettings, ModelSettings, Settings
from es_embed.embed.protocol import Encoder
from es_embed.embed.service import EmbeddingService
from es_embed.indices.document import document_text
from es_embed.indices.resolve import resolve_index
from es_embed.search.execute import Searcher
from es_embed.search.spec import SearchSpec
from tests.es.search_support import text_and_vector
from tests.files_support import write_pdf, write_text
from tests.service_support import service_standin

pytestmark = pytest.mark.es

PDF_PAGES = [
    "Heater H200 installation manual. Unpack the heater and check that the box holds "
    "the heater, the wall bracket and four screws.",
    "Mounting. Fix the bracket to a solid wall at least twenty centimetres above the "
    "floor, then hang the heater on it.",
    "Troubleshooting. When the display shows E9 the heater has overheated and the thermal "
    "fuse has blown: unplug it and have the fuse replaced by a technician.",
]
MARKDOWN = """\
# Espresso machine guide

## Filling

Fill the tank with cold water up to the line.

## Brewing

Grind the coffee finely and press it firmly into the basket.

## Warranty

The pump is guaranteed for five years from the date of purchase.
"""
HTML = """<!doctype html><html><head><title>Shop help</title>
<script>track("help")</script></head><body>
<nav><a href="/">Home</a> <a href="/cart">Cart</a></nav>
<h1>Ordering</h1><p>Add items to your basket and pay by card.</p>
<h2>Delivery</h2><p>Orders leave our warehouse within two working days.</p>
<h2>Returns</h2><p>Unopened parcels may be sent back within thirty days for a full refund.</p>
</body></html>"""
# Each distractor is a sibling of one file, like it but for the last page or section.
DISTRACTORS = {
    "heater-h100.txt": "Heater H100 installation manual. Unpack the heater and check that the "
    "box holds the heater, the wall bracket and four screws.\n\nMounting. Fix the bracket to "
    "a solid wall at least twenty centimetres above the floor, then hang the heater on it.",
    "espresso-mini.md": "# Espresso mini guide\n\n## Filling\n\nFill the tank with cold water "
    "up to the line.\n\n## Brewing\n\nGrind the coffee finely and press it firmly into the "
    "basket.",
    "ordering.html": "<title>Shop help, 2023</title><h1>Ordering</h1><p>Add items to your basket "
    "and pay by card.</p><h2>Delivery</h2><p>Orders leave our warehouse within two working "
    "days.</p>",
}
QUESTIONS = {
    "manuals/heater.pdf": ("the screen says E9, what part burnt out?", "thermal fuse has blown"),
    "espresso.md": ("how many years is the pump covered for?", "five years"),
    "site/help.html": ("can I get my money back for a package I never opened?", "full refund"),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    write_pdf(root / "manuals" / "heater.pdf", PDF_PAGES, title="Heater H200 manual")
    write_text(root / "espresso.md", MARKDOWN)
    write_text(root / "site" / "help.html", HTML)
    for name, text in DISTRACTORS.items():
        write_text(root / "other" / name, text)
    return root


@pytest.fixture
def index(es: Elasticsearch, index_name: str, minilm_encoder: Encoder) -> IndexSettings:
    dims = minilm_encoder.info.hidden_size
    es.indices.create(index=index_name, mappings=text_and_vector(dims))
    return IndexSettings(name=index_name, text_fields=("title", "text"), vector_field="embedding")


@pytest.fixture
async def service(
    minilm_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[EmbeddingService]:
    """One MiniLM for the test's searches, and the same weights for the command (which runs
    in its own thread and event loop, so it gets a service of its own)."""

    command_service = service_standin(minilm_encoder, model=ModelSettings(name="minilm"))
    monkeypatch.setattr(ingest, "embedding_service", command_service)
    async with command_service(Settings()) as svc:
        yield svc


async def run_ingest(
    tmp_path: Path, es_url: str, index: IndexSettings, folder: Path, *extra: str
) -> int:
    config = tmp_path / "es-embed.yaml"
    conf = {"name": index.name, "text_fields": ["title", "text"], "vector_field": "embedding"}
    settings = {"elasticsearch": {"url": es_url}, "model": {"name": "minilm"}, "indices": [conf]}
    config.write_text(yaml.safe_dump(settings))
    parser = argparse.ArgumentParser(prog="es-embed")
    ingest.register(parser.add_subparsers())
    argv = ["ingest", str(folder), "--index", index.name, "--config", str(config), *extra]
    args = parser.parse_args(argv)
    return await asyncio.to_thread(args.func, args)  # the command runs its own event loop


def stored_ids(es: Elasticsearch, index: IndexSettings) -> dict[str, int]:
    es.indices.refresh(index=index.name)
    hits = es.search(index=index.name, size=100, version=True, source=False)["hits"]["hits"]
    return {h["_id"]: h["_version"] for h in hits}


async def test_pdf_markdown_and_html_are_found_by_their_last_page_or_section(
    es: Elasticsearch,
    aes: AsyncElasticsearch,
    es_url: str,
    tmp_path: Path,
    folder: Path,
    index: IndexSettings,
    service: EmbeddingService,
    minilm_encoder: Encoder,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await run_ingest(tmp_path, es_url, index, folder) == 0
    assert "6 files to load, 0 cannot be parsed" in capsys.readouterr().err
    ids = stored_ids(es, index)
    assert set(ids) == set(QUESTIONS) | {f"other/{name}" for name in DISTRACTORS}

    target = resolve_index(index, service.info.shape)
    searcher = Searcher(aes, service.embed_query, [target])
    for path, (question, fact) in QUESTIONS.items():
        source = es.get(index=index.name, id=path)["_source"]
        assert fact in source["text"] and source["path"] == path
        embedded = document_text(source, target.text_fields)
        assert not minilm_encoder.tokenize([embedded])[0].truncated  # the fact is in the vector
        for mode in ("knn", "hybrid"):
            found = await searcher.search(SearchSpec(index.name, question, mode=mode, k=3))
            assert found.hits[0].id == path, (mode, question, [h.id for h in found.hits])

    # Loaded again: the same ids, each document overwritten rather than added twice.
    assert await run_ingest(tmp_path, es_url, index, folder) == 0
    assert stored_ids(es, index) == {doc_id: 2 for doc_id in ids}


async def test_a_broken_pdf_is_skipped_by_name_and_strict_writes_nothing(
    es: Elasticsearch,
    es_url: str,
    tmp_path: Path,
    folder: Path,
    index: IndexSettings,
    service: EmbeddingService,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = (folder / "manuals" / "heater.pdf").read_bytes()
    (folder / "manuals" / "cut.pdf").write_bytes(good[: len(good) // 2])

    assert await run_ingest(tmp_path, es_url, index, folder, "--strict") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: manuals/cut.pdf: not a readable PDF") and err.count("\n") == 1
    assert stored_ids(es, index) == {}

    assert await run_ingest(tmp_path, es_url, index, folder) == 0
    assert "skipped manuals/cut.pdf: not a readable PDF" in capsys.readouterr().err
    ids = stored_ids(es, index)
    assert len(ids) == 6 and "manuals/cut.pdf" not in ids and "manuals/heater.pdf" in ids
