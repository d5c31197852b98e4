"""What the commands share: an Elasticsearch client, and one way to run and report errors."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from es_embed.config import ConfigError, Settings, load_settings
from es_embed.elastic.client import build_client, describe_client
from es_embed.errors import EmbedError, ErrorKind

# Exit codes: 0 success, 1 a runtime failure worth retrying later (Elasticsearch or the
# model unavailable), 2 bad input (a one-line ``error: ...`` naming the setting, argument
# or line), 130 interrupted.
EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_CODES: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: EXIT_BAD_INPUT,
    ErrorKind.UNAUTHORIZED: EXIT_BAD_INPUT,
    ErrorKind.NOT_FOUND: EXIT_BAD_INPUT,
    ErrorKind.TOO_LARGE: EXIT_BAD_INPUT,
    ErrorKind.UNPROCESSABLE: EXIT_BAD_INPUT,
    ErrorKind.OVERLOADED: EXIT_RUNTIME,
    ErrorKind.UNAVAILABLE: EXIT_RUNTIME,
}


def report(exc: ConfigError | EmbedError) -> int:
    """Print the one-line error and return its exit code."""
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_CODES[exc.kind] if isinstance(exc, EmbedError) else EXIT_BAD_INPUT


@contextlib.asynccontextmanager
async def es_client(settings: Settings) -> AsyncIterator[AsyncElasticsearch]:
    client = build_client(settings.elasticsearch)
    try:
        yield client
    finally:
        await client.close()


def settings_or_report(path: str | None) -> Settings | None:
    """The settings from ``path``, or None after printing the one-line error (exit 2)."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


# Exit status of a command whose reader closed its output: 128 + SIGPIPE, as shells report.
BROKEN_PIPE = 141


def run_command(main: Coroutine[Any, Any, int], settings: Settings | None = None) -> int:
    """Run a command's coroutine; bad input -> one line and exit 2, unreachable ES -> 1."""
    try:
        return asyncio.run(main)
    except (ConfigError, EmbedError) as exc:
        return report(exc)
    except BrokenPipeError:  # a ConnectionError, but from stdout: the reader (`| head`) left
        # Quiet, as other tools piped into head; stdout goes to /dev/null so that the
        # interpreter's final flush does not fail on the closed pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except (ConnectionError, TransportError) as exc:
        where = f" at {describe_client(settings.elasticsearch)}" if settings else ""
        print(f"error: cannot reach Elasticsearch{where}: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"error: Elasticsearch answered {exc.meta.status}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML settings file")
    parser.add_argument("--index", action="append", metavar="NAME", help="only this index (repeat)")


def run_with_settings(
    args: argparse.Namespace, command: Callable[[Settings], Coroutine[Any, Any, int]]
) -> int:
    """Load ``--config`` (a bad one: one line, exit 2), then run the command with it."""
    settings = settings_or_report(args.config)
    if settings is None:
        return 2
    return run_command(command(settings), settings)
