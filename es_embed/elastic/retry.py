"""Exponential backoff, which failures are worth waiting out, and the one way to wait out
a busy or failed embedding service."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from es_embed.elastic.refusals import RetryLater, Verdict, classify_error
from es_embed.errors import EmbedError, ErrorKind

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class Patience:
    """How long a one-shot run (backfill) waits out failures in a row before it lets the
    last one through; ``give_up`` None waits forever, as ``serve`` must."""

    def __init__(self, give_up: float | None) -> None:
        self._give_up = give_up
        self._since: float | None = None

    def reset(self) -> None:
        self._since = None

    def delay(self, wanted: float) -> float | None:
        """The wait before the next try, or None when it is time to give up."""
        if self._give_up is None:
            return wanted
        now = time.monotonic()
        self._since = self._since if self._since is not None else now
        left = self._give_up - (now - self._since)
        return min(wanted, left) if left > 0 else None


def is_transient(exc: BaseException) -> bool:
    """Elasticsearch unreachable/overloaded/blocked or the model busy/down: waiting fixes it.

    Anything else (a 400 from a mapping mistake, a 403 from missing privileges) is
    retried too, by the callers, but logged as an error since waiting alone will not fix it.
    """
    if isinstance(exc, EmbedError):
        return exc.kind in (ErrorKind.UNAVAILABLE, ErrorKind.OVERLOADED)
    if isinstance(exc, RetryLater):
        return exc.refusal.transient
    refusal = classify_error(exc)
    return refusal.verdict is Verdict.RETRYABLE and refusal.transient


async def embed_retrying(call: Callable[[], Awaitable[T]], backoff: Backoff, what: str) -> T:
    """Run an embedding call until the service takes it; the feed and the loader share it.

    OVERLOADED: our own work filled the bulk lane; wait the ``retry_after`` it names (not
    an outage, not logged). UNAVAILABLE: the model failed and the service is probing it;
    back off, logged once per call. Any other error is the caller's to handle.
    """
    warned = False
    while True:
        try:
            return await call()
        except EmbedError as exc:
            if exc.kind is ErrorKind.OVERLOADED:
                delay = exc.retry_after or backoff.initial
            elif exc.kind is ErrorKind.UNAVAILABLE:
                delay = backoff.next()
                level = logging.DEBUG if warned else logging.WARNING
                log.log(level, "%s: the model is unavailable (%s); retrying in %.1f s",
                        what, exc.message, delay)  # fmt: skip
                warned = True
            else:
                raise
        await asyncio.sleep(delay)
