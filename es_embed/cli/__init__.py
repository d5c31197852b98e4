"""``es-embed``: one command, a subcommand per job.

Each subcommand lives in its own module under ``es_embed.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (``Namespace -> exit code``).
A module that does not exist yet is simply not offered; one that fails to import still
appears, and says why when it is run, so one broken command never takes the others down.

Exit codes: 0 success, 1 a runtime failure (e.g. Elasticsearch unreachable), 2 bad input
(a one-line ``error: ...`` naming the setting or argument), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

COMMANDS = ("serve", "setup", "backfill", "ingest", "search", "status")


def _broken(name: str, exc: BaseException) -> Any:
    def run(args: argparse.Namespace) -> int:
        print(f"error: the {name} command cannot start: {exc}", file=sys.stderr)
        return 1

    return run


def _add_broken(subparsers: Any, name: str, exc: BaseException) -> None:
    p = subparsers.add_parser(name, help="(unavailable: failed to import)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_broken(name, exc))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="es-embed",
        description="Self-hosted embeddings, vector back-fill and hybrid search for Elasticsearch.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # not written yet
            _add_broken(subparsers, name, exc)
            continue
        except Exception as exc:  # a broken module must not take the other commands down
            _add_broken(subparsers, name, exc)
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
