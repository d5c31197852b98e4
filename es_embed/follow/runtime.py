"""What the follow commands share: an Elasticsearch client and a started embedding service."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, TransportError

from es_embed.config import ConfigError, Settings
from es_embed.embed.service import EmbeddingService
from es_embed.errors import EmbedError
from es_embed.follow.client import build_client, describe_client


@contextlib.asynccontextmanager
async def es_client(settings: Settings) -> AsyncIterator[AsyncElasticsearch]:
    client = build_client(settings.elasticsearch)
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def embedding_service(settings: Settings) -> AsyncIterator[EmbeddingService]:
    """Load the configured model (off the event loop) and run it behind the batcher."""
    from es_embed.embed.encoder import load_encoder  # heavy (torch): only when needed

    encoder = await asyncio.to_thread(load_encoder, settings.model)
    service = EmbeddingService(encoder, settings.batching, settings.model)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def run_command(main: Coroutine[Any, Any, int], settings: Settings | None = None) -> int:
    """Run a command's coroutine; bad input -> one line and exit 2, unreachable ES -> 1."""
    try:
        return asyncio.run(main)
    except (ConfigError, EmbedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
