"""Exponential backoff, and which failures are worth waiting out."""

from __future__ import annotations

import random

from elasticsearch import ApiError, TransportError

from es_embed.errors import EmbedError, ErrorKind


class Backoff:
    """initial, 2x initial, ... up to ``maximum``, with a little jitter so replicas spread out."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = max(initial, 0.01)
        self.maximum = max(maximum, self.initial)
        self._next = self.initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay * random.uniform(0.9, 1.1)

    def reset(self) -> None:
        self._next = self.initial


def is_transient(exc: BaseException) -> bool:
    """Elasticsearch unreachable/overloaded or the model busy/down: wait and try again.

    Anything else (a 400 from a mapping mistake, a 403 from missing privileges) is
    retried too, by the callers, but logged as an error since waiting will not fix it.
    """
    if isinstance(exc, EmbedError):
        return exc.kind in (ErrorKind.UNAVAILABLE, ErrorKind.OVERLOADED)
    if isinstance(exc, ApiError):
        return exc.meta.status >= 500 or exc.meta.status == 429
    return isinstance(exc, TransportError | OSError | TimeoutError)
