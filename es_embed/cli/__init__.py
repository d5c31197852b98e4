"""``es-embed``: one command, a subcommand per job.

Each subcommand lives in its own module under ``es_embed.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (``Namespace -> exit code``).

Exit codes: see ``cli/runtime.py`` (the one table from error kind to exit code).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from es_embed.cli import backfill, ingest, search, serve, setup, status

COMMANDS = (serve, setup, backfill, ingest, search, status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="es-embed",
        description="Self-hosted embeddings, vector back-fill and hybrid search for Elasticsearch.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
