"""The wheel smoke's writing commands, from the installed wheel against the test node.

- ``es-embed ingest FILE.jsonl``: samples/corpus.jsonl, every document indexed with its vector;
- ``es-embed ingest DIR``: one .txt, .md, .html and .pdf file (each parser is a runtime
  dependency: one missing from pyproject.toml fails here) and a .csv that is only counted;
- ``es-embed backfill``, with a config whose model refuses long inputs
  (``truncation: error``): every short document gets its vector, the long one is listed as
  failed (exit 1, ``status`` shows why); then ``backfill --retry-failed`` with the usual
  config takes it again and clears the record.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from devtools.wheel_smoke_cli import DIMS, Installed, SmokeFailure, status_json, status_table
from tests.files_support import write_pdf, write_text

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "samples" / "corpus.jsonl"
CORPUS_SIZE = 30
# file -> (the title its parser must find, a phrase its text must hold)
FOLDER = {
    "guide.md": ("Lighthouse keeping", "The lamp is trimmed at dusk"),
    "notes.txt": ("notes", "Tide tables are printed each spring"),
    "page.html": ("Semaphore flags", "Two flags held at angles spell each letter"),
    "report.pdf": ("Fog signals report", "A diaphone sounds every thirty seconds"),
}
BACKFILL_DOCS = {
    f"b{i}": {"title": title, "text": f"{title} is a short note."}
    for i, title in enumerate(("Knots", "Buoys", "Charts", "Anchors", "Compasses"), start=1)
}
LONG_ID = "long"  # more tokens than the refusing config's max_length
LONG_DOC = {"title": "A long log", "text": " ".join(f"entry{i}" for i in range(60))}
REFUSING_MODEL = {"truncation": "error", "max_length": 32}


def write_folder(folder: Path) -> None:
    (title_md, md), (_, txt) = FOLDER["guide.md"], FOLDER["notes.txt"]
    (title_html, html), (title_pdf, pdf) = FOLDER["page.html"], FOLDER["report.pdf"]
    write_text(folder / "guide.md", f"---\ntitle: {title_md}\n---\n\n## Duties\n\n*{md}*.\n")
    write_text(folder / "notes.txt", f"{txt}.\n")
    write_text(
        folder / "page.html",
        f"<html><head><title>{title_html}</title><style>p {{}}</style></head>"
        f"<body><nav>menu</nav><p>{html}.</p></body></html>",
    )
    write_pdf(folder / "report.pdf", [f"{pdf}."], title=title_pdf)
    write_text(folder / "table.csv", "a,b\n1,2\n")  # not a kind ingest reads: only counted


def documents(es: Elasticsearch, index: str) -> dict[str, dict[str, Any]]:
    """Every document of ``index`` by id, vectors included."""
    es.indices.refresh(index=index)
    resp = es.search(index=index, size=1000, source={"exclude_vectors": False})
    return {hit["_id"]: hit["_source"] for hit in resp["hits"]["hits"]}


def has_vector(source: dict[str, Any]) -> bool:
    return len(source.get("embedding") or []) == DIMS and bool(source.get("_embed", {}).get("hash"))


def check_ingest_jsonl(cli: Installed, config: Path, es: Elasticsearch, index: str) -> None:
    corpus = shutil.copy(CORPUS, cli.work / CORPUS.name)
    done = cli("ingest", str(corpus), "--config", str(config), "--index", index)
    last = done.stderr.strip().splitlines()[-1:]
    if not last or f"indexed {CORPUS_SIZE} failed 0" not in last[0]:
        raise SmokeFailure(f"es-embed ingest {CORPUS.name}: last line {last}")
    docs = {k: v for k, v in documents(es, index).items() if k.startswith("s")}
    with_vector = sorted(k for k, v in docs.items() if has_vector(v))
    if len(with_vector) != CORPUS_SIZE:
        raise SmokeFailure(f"after ingest of {CORPUS.name}, {with_vector} have vectors")


def check_ingest_folder(cli: Installed, config: Path, es: Elasticsearch, index: str) -> None:
    folder = cli.work / "folder"
    write_folder(folder)
    done = cli("ingest", str(folder), "--config", str(config), "--index", index)
    summary = f"{folder}: 4 files to load, 0 cannot be parsed, 1 of other types (.csv 1)"
    if summary not in done.stderr.splitlines():
        raise SmokeFailure(f"es-embed ingest DIR: no line {summary!r} in:\n{done.stderr}")
    docs = documents(es, index)
    for name, (title, phrase) in FOLDER.items():
        doc = docs.get(name, {})
        if doc.get("title") != title or phrase not in doc.get("text", "") or not has_vector(doc):
            shown = {k: v for k, v in doc.items() if k != "embedding"}
            raise SmokeFailure(f"es-embed ingest DIR: {name} became {shown}, want {title!r}")


def write_backfill_docs(es: Elasticsearch, index: str) -> None:
    """Written with the plain client, as any application writes: no vectors yet."""
    for doc_id, doc in {**BACKFILL_DOCS, LONG_ID: LONG_DOC}.items():
        es.index(index=index, id=doc_id, document=doc)


def check_backfill(
    cli: Installed, refusing: Path, config: Path, es: Elasticsearch, index: str
) -> None:
    """Past the refused document with exit 1; status (table and --json) lists it."""
    done = cli("backfill", "--config", str(refusing), "--index", index, code=1)
    want = "error: 1 document was skipped and listed as failed; `es-embed status` shows why"
    if not done.stderr.strip().splitlines()[-1].startswith(want):
        raise SmokeFailure(f"es-embed backfill: last line is not {want!r}:\n{done.stderr}")
    docs = documents(es, index)
    missing = sorted(k for k in BACKFILL_DOCS if not has_vector(docs.get(k, {})))
    if missing or has_vector(docs[LONG_ID]):
        raise SmokeFailure(f"es-embed backfill: no vector on {missing}, or one on {LONG_ID}")
    rows = status_table(cli, config, index)
    if list(rows) != [index] or rows[index][1] != "0" or rows[index][4] != "-":
        raise SmokeFailure(f"es-embed status after backfill: rows {rows}, want {index} shard 0")
    failed = status_json(cli, config, index)["failed"]
    reasons = {f["doc_id"]: f["reason"] for f in failed}
    if list(reasons) != [LONG_ID] or "the model refused its text" not in reasons[LONG_ID]:
        raise SmokeFailure(f"es-embed status --json: failed {failed}, want only {LONG_ID}")


def check_retry_failed(cli: Installed, config: Path, es: Elasticsearch, index: str) -> None:
    """With the usual config the long document passes: a vector, and no record left."""
    cli("backfill", "--config", str(config), "--index", index, "--retry-failed")
    if not has_vector(documents(es, index)[LONG_ID]):
        raise SmokeFailure(f"es-embed backfill --retry-failed: {LONG_ID} still has no vector")
    report = status_json(cli, config, index)
    shards = [(s["name"], s["index"], s["shard"]) for s in report["shards"]]
    if report["failed"] or shards != [(index, index, 0)]:
        raise SmokeFailure(f"es-embed status --json after the retry: {report}")
