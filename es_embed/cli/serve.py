"""``es-embed serve --config FILE [--host H] [--port P]``: the sidecar.

Runs the HTTP API (``es_embed.api.app.create_app``) and, when indices are configured and
``follow.enabled``, the followers that keep their vectors filled (``--no-follow`` to run
the API alone). API keys come from the config file or ES_EMBED_SERVER_API_KEYS only: a
command-line flag would show in ``ps`` and shell history.

Shutdown (SIGTERM or Ctrl-C): the listening socket closes at once; queued and in-flight
embeddings get up to ``server.drain_seconds`` to finish, whatever is left is answered 503;
followers stop and keep their checkpoints; the process exits. Bounded in all: a shutdown that
overruns the drain time by more than SHUTDOWN_GRACE seconds is abandoned.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from es_embed.api.app import create_app
from es_embed.api.keys import FOLLOWERS, SERVICE
from es_embed.cli.runtime import report
from es_embed.config import ConfigError, Settings, api_keys, load_settings
from es_embed.errors import EmbedError

log = logging.getLogger("es_embed.serve")

# After the drain: time for handlers to write their answers and followers to stop.
SHUTDOWN_GRACE = 3.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the embedding API (and the follower for configured indices)",
        description="Serve /v1/embeddings, /v1/rerank, /v1/models, /health, /metrics (and "
        "/v1/search when indices are configured), and keep the configured indices' vectors "
        "filled.",
    )
    p.add_argument(
        "--config", metavar="FILE", help="YAML settings file (see es-embed.example.yaml)"
    )
    p.add_argument("--host", help="listen address (default: server.host)")
    p.add_argument("--port", type=_port, help="listen port (default: server.port)")
    p.add_argument("--no-follow", action="store_true", help="serve the API only, run no follower")
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="debug logs one line per request (default: info)",
    )
    p.set_defaults(func=main)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 < port <= 65535:
        raise argparse.ArgumentTypeError(f"expected 1..65535, got {port}")
    return port


def settings_for(args: argparse.Namespace) -> Settings:
    """The config file plus environment, then --host/--port (the command line wins)."""
    settings = load_settings(args.config)
    listen = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if listen:
        settings = dataclasses.replace(
            settings, server=dataclasses.replace(settings.server, **listen)
        )
    api_keys(settings.server)  # an unreadable keys file is a config error, before the model
    return settings


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    # The Elasticsearch client logs every request at info: the follower polls each shard
    # twice a second, which would drown the log. At debug it would also log every body (a
    # bulk write-back with its vectors): one line per request is what debug promises.
    quiet = logging.WARNING if args.log_level != "debug" else logging.INFO
    logging.getLogger("elastic_transport").setLevel(quiet)
    try:
        settings = settings_for(args)
        app = create_app(settings, follow=not args.no_follow)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(app, settings))
    except (ConfigError, EmbedError) as exc:  # raised while loading the model or followers
        return report(exc)
    except OSError as exc:  # mostly: the address is taken
        where = _address(settings)
        print(f"error: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _address(settings: Settings) -> str:
    return f"http://{settings.server.host}:{settings.server.port}"


async def serve(app: web.Application, settings: Settings) -> int:
    """Run until SIGTERM/SIGINT, then shut down within the drain time (plus grace)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_GRACE
    )
    try:
        log.info("loading model %s", settings.model.name)
        if settings.reranker.name:
            log.info("loading reranker %s", settings.reranker.name)
        await runner.setup()  # cleanup_ctx: model, Elasticsearch client, followers
        await web.TCPSite(runner, settings.server.host, settings.server.port).start()
        log.info("%s", startup_summary(app, settings))
        await stop.wait()
        log.info("shutting down: up to %g s to drain", settings.server.drain_seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        try:
            await asyncio.wait_for(runner.cleanup(), settings.server.drain_seconds + SHUTDOWN_GRACE)
        except TimeoutError:
            log.warning("shutdown overran the drain time; exiting anyway")
    log.info("stopped")
    return 0


def startup_summary(app: web.Application, settings: Settings) -> str:
    info = app[SERVICE].info
    keys = api_keys(settings.server)
    if keys:
        open_paths = [
            p
            for p, protected in (
                ("/health", settings.server.protect_health),
                ("/metrics", settings.server.protect_metrics),
            )
            if not protected
        ]
        auth = f"{len(keys)} API key(s); open: {', '.join(open_paths) or 'nothing'}"
    else:
        auth = "no API keys (open to anyone who can reach it)"
    indices = ", ".join(i.name for i in settings.indices) or "none"
    follow = f"following {len(app[FOLLOWERS])} index(es)" if FOLLOWERS in app else "follow off"
    ranker = app[SERVICE].reranker_info
    devices = ", ".join(app[SERVICE].devices)  # one model replica on each
    rerank = (
        f"reranker {ranker.model_id} ({ranker.family} family, {ranker.device}, {ranker.dtype}, "
        f"max {ranker.max_length} tokens per pair)"
        if ranker is not None
        else "no reranker"
    )
    return (
        f"es-embed serving {info.model_id} ({info.hidden_size} dims, {devices}, "
        f"{info.dtype}, max {info.max_length} tokens) on {_address(settings)}; {rerank}; "
        f"{auth}; indices: {indices}; {follow}"
    )
