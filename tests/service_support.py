"""A stand-in for ``embedding_service(settings)``, the commands' model loader: a given
encoder (a fake, or the session's one MiniLM) behind the real ``EmbeddingService``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from es_embed.config import BatchSettings, ModelSettings, Settings
from es_embed.embed.protocol import Encoder
from es_embed.embed.service import EmbeddingService


def service_standin(
    encoder: Encoder,
    batch: BatchSettings | None = None,
    model: ModelSettings | None = None,
    on_load: Callable[[Settings], None] | None = None,
) -> Callable[[Settings], contextlib.AbstractAsyncContextManager[EmbeddingService]]:
    """Patch it over a command module's ``embedding_service``; ``on_load`` runs once the
    service has started, as the real one returns once the model is loaded."""

    @contextlib.asynccontextmanager
    async def embedding_service(
        settings: Settings, *, with_reranker: bool = False
    ) -> AsyncIterator[EmbeddingService]:
        # The real one's signature; the stand-in serves no reranker either way.
        svc = EmbeddingService(encoder, batch or BatchSettings(), model or ModelSettings())
        await svc.start()
        if on_load is not None:
            on_load(settings)
        try:
            yield svc
        finally:
            await svc.stop()

    return embedding_service
