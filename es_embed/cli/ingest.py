"""``es-embed ingest FILE.jsonl --index NAME``: first loads with vectors computed up front."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from es_embed.cli.progress import ProgressLine
from es_embed.cli.runtime import es_client, run_command
from es_embed.config import ConfigError, Settings, load_settings
from es_embed.embed.service import embedding_service
from es_embed.indices.resolve import resolve_index
from es_embed.ingest.loader import IngestOptions, IngestResult, Loader, validate


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="bulk-load a JSONL file, embedding each document before it is indexed",
        description="Reads FILE twice: first every line is validated (nothing is written "
        "if one is bad, and --dry-run stops there), then documents are embedded and "
        "bulk-indexed with their vector and _embed set, so the follower skips them.",
    )
    p.add_argument("file", metavar="FILE.jsonl")
    p.add_argument("--index", required=True, metavar="NAME", help="a configured index")
    p.add_argument("--config", metavar="FILE", help="YAML settings file")
    p.add_argument("--id-field", default="_id", help="field holding the id ('' = generated)")
    p.add_argument(
        "--fields", metavar="A,B",
        help="fields copied into each document (default: all but the id field)",
    )  # fmt: skip
    p.add_argument("--chunk-docs", type=int, default=500, help="documents per bulk request")
    p.add_argument("--chunk-mb", type=float, default=8.0, help="megabytes per bulk request")
    p.add_argument("--dry-run", action="store_true", help="validate the file, write nothing")
    p.set_defaults(func=main)


def options_from(args: argparse.Namespace, settings: Settings) -> IngestOptions:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else None
    if args.chunk_docs < 1 or args.chunk_mb <= 0:
        raise ConfigError("--chunk-docs and --chunk-mb must be positive")
    return IngestOptions(
        id_field=args.id_field or None,
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
    if not path.is_file():  # before the model is loaded: that can take a minute
        print(f"error: cannot read {path}: no such file", file=sys.stderr)
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
    conf = settings.index(name)
    lines = validate(path, options)  # a bad line is reported before the model loads
    async with es_client(settings) as es, embedding_service(settings) as service:
        progress = IngestProgress()  # created once the model is loaded: docs/s leaves it out
        target = resolve_index(conf, service.info.shape)
        loader = Loader(es, service, target, options, on_progress=progress.update)
        result = await loader.run(path, validated_lines=lines)
    progress.finish(result)
    if result.failed:
        print(f"{result.failed:,} documents refused; first: {result.first_error}", file=sys.stderr)
        return 1
    return 0
