"""``es-embed ingest FILE.jsonl|DIR --index NAME``: first loads with vectors computed up front.

A JSONL file is validated line by line; a folder is parsed file by file
(``ingest/files.py``). Either way nothing is written before all of it has been read, and
the documents then go through the one ``Loader``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from es_embed.cli.progress import ProgressLine
from es_embed.cli.runtime import es_client, run_command
from es_embed.config import ConfigError, Settings, load_settings
from es_embed.embed.startup import embedding_service
from es_embed.indices.resolve import resolve_index
from es_embed.ingest.files import SUFFIXES, FolderScan, file_lines, scan_folder
from es_embed.ingest.loader import IngestOptions, IngestResult, Line, Loader, validate


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="bulk-load a JSONL file or a folder of files, embedding each document before "
        "it is indexed",
        description="Reads everything first: every JSONL line is validated, or every file of "
        "the folder parsed (nothing is written if a line is bad, and --dry-run stops there), "
        "then documents are embedded and bulk-indexed with their vector and _embed set, so "
        "the follower skips them. A folder gives one document per .txt, .md, .html or .pdf "
        "file (_id and path: its relative path; title; text).",
    )
    p.add_argument("file", metavar="FILE.jsonl|DIR")
    p.add_argument("--index", required=True, metavar="NAME", help="a configured index")
    p.add_argument("--config", metavar="FILE", help="YAML settings file")
    p.add_argument("--id-field", help="JSONL: field holding the id (default _id; '' = generated)")
    p.add_argument(
        "--fields", metavar="A,B",
        help="JSONL: fields copied into each document (default: all but the id field)",
    )  # fmt: skip
    p.add_argument(
        "--strict", action="store_true",
        help="DIR: a file that cannot be parsed stops the run (exit 2, nothing written) "
        "instead of being reported and skipped",
    )  # fmt: skip
    p.add_argument("--chunk-docs", type=int, default=500, help="documents per bulk request")
    p.add_argument("--chunk-mb", type=float, default=8.0, help="megabytes per bulk request")
    p.add_argument(
        "--dry-run", action="store_true",
        help="validate the file, or list what the folder would load; write nothing",
    )  # fmt: skip
    p.set_defaults(func=main)


def options_from(args: argparse.Namespace, settings: Settings) -> IngestOptions:
    if Path(args.file).is_dir() and (args.id_field is not None or args.fields):
        raise ConfigError(
            "--id-field and --fields apply to a JSONL file; a folder's documents have the "
            "file's relative path as _id and the fields title, path and text"
        )
    id_field = "_id" if args.id_field is None else args.id_field
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else None
    if args.chunk_docs < 1 or args.chunk_mb <= 0:
        raise ConfigError("--chunk-docs and --chunk-mb must be positive")
    return IngestOptions(
        id_field=id_field or None,
        fields=fields,
        chunk_docs=args.chunk_docs,
        chunk_bytes=int(args.chunk_mb * 1024 * 1024),
        max_backoff=settings.follow.max_backoff,
    )


def main(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        conf = settings.index(args.index)
        options = options_from(args, settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = Path(args.file)
    if path.is_dir():
        return _folder_main(args, settings, path, options)
    if not path.is_file():  # before the model is loaded: that can take a minute
        print(f"error: cannot read {path}: no such file or folder", file=sys.stderr)
        return 2
    if args.dry_run:  # no model, no cluster: just the file
        return run_command(_dry_run(path, options), settings)
    return run_command(_run(settings, conf.name, path, options), settings)


async def _dry_run(path: Path, options: IngestOptions) -> int:
    n = validate(path, options)
    print(f"{path}: {n:,} documents, all valid")
    return 0


class IngestProgress:
    """The ingest line: documents past the model (embedded, or with no text) against the
    file, so it moves while a chunk is embedded; documents indexed and refused beside."""

    def __init__(self) -> None:
        self._bar = ProgressLine("embedded")  # its clock starts here

    def update(self, r: IngestResult) -> None:
        self._bar.update(r.ready, r.lines, indexed=r.indexed, failed=r.failed)

    def finish(self, r: IngestResult) -> None:
        self._bar.finish(r.ready, r.lines, indexed=r.indexed, failed=r.failed)


async def _run(settings: Settings, name: str, path: Path, options: IngestOptions) -> int:
    lines = validate(path, options)  # a bad line is reported before the model loads
    return await _load(settings, name, options, lambda ld: ld.run(path, validated_lines=lines))


def _folder_main(
    args: argparse.Namespace, settings: Settings, root: Path, options: IngestOptions
) -> int:
    """Parse every file first; report what cannot be parsed (or stop, with --strict)."""
    scan = scan_folder(root)
    if scan.failures and args.strict:
        more = len(scan.failures) - 1
        also = f"; {more} more files cannot be parsed" if more else ""
        print(f"error: {scan.failures[0]}{also} (--strict: nothing written)", file=sys.stderr)
        return 2
    for failure in scan.failures:
        print(f"skipped {failure}", file=sys.stderr)
    if not scan.files:
        kinds = ", ".join(SUFFIXES)
        print(f"error: {root}: no file to load (looked for {kinds})", file=sys.stderr)
        return 2
    lines = file_lines(scan, settings.index(args.index).text_fields)
    if args.dry_run:
        for parsed in scan.files:
            print(f"{parsed.path}\t{parsed.title}\t{len(parsed.text):,} characters")
        print(folder_summary(root, scan))
        return 0
    print(folder_summary(root, scan), file=sys.stderr)
    return run_command(_load_lines(settings, args.index, lines, options), settings)


def folder_summary(root: Path, scan: FolderScan) -> str:
    other = ", ".join(f"{ext} {n}" for ext, n in sorted(scan.other.items()))
    return (
        f"{root}: {len(scan.files):,} files to load, {len(scan.failures):,} cannot be parsed, "
        f"{scan.other.total():,} of other types" + (f" ({other})" if other else "")
    )


async def _load_lines(settings: Settings, name: str, lines: list[Line], opts: IngestOptions) -> int:
    return await _load(settings, name, opts, lambda ld: ld.load(iter(lines), len(lines)))


async def _load(
    settings: Settings,
    name: str,
    options: IngestOptions,
    feed: Callable[[Loader], Awaitable[IngestResult]],
) -> int:
    """Load the model, then feed the loader; exit 1 if Elasticsearch refused a document or
    one was written without its vector."""
    conf = settings.index(name)
    async with es_client(settings) as es, embedding_service(settings) as service:
        progress = IngestProgress()  # created once the model is loaded: docs/s leaves it out
        target = resolve_index(conf, service.info.shape)
        loader = Loader(es, service, target, options, on_progress=progress.update)
        result = await feed(loader)
    progress.finish(result)
    if result.unembedded:
        print(f"{result.unembedded:,} documents written without a vector (too large for the "
              f"model's memory; the follower lists them as failed: es-embed status); first: "
              f"{result.first_unembedded}", file=sys.stderr)  # fmt: skip
    if result.failed:
        print(f"{result.failed:,} documents refused; first: {result.first_error}", file=sys.stderr)
    return 1 if result.failed or result.unembedded else 0
