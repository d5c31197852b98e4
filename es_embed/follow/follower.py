"""Follow one configured index, alias or data stream: a feed per shard of each concrete index.

A supervisor polls ``GET <name>/_stats?level=shards`` (one call resolves aliases and data
streams to their concrete indices and gives every primary's global checkpoint, index
uuid and shard count), starts a feed for each new (uuid, shard), hands each feed its
latest global checkpoint, and drops the feeds of indices that went away. A recreated
index has a new uuid, so its feeds start from -1. Feeds run independently, so a long
back-fill of one shard never delays fresh writes on another.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from elasticsearch import AsyncElasticsearch, NotFoundError

from es_embed.config import FollowSettings, Settings
from es_embed.elastic.retry import Backoff, is_transient
from es_embed.embed.service import EmbeddingService
from es_embed.follow.feed import IndexGone, Progress, ShardFeed
from es_embed.follow.state import CheckpointStore, ensure_state_index
from es_embed.indices.resolve import IndexTarget, resolve_all
from es_embed.metrics import Registry

log = logging.getLogger(__name__)
T = TypeVar("T")

STATS_FILTER = [
    "indices.*.uuid",
    "indices.*.shards.*.routing.primary",
    "indices.*.shards.*.seq_no.global_checkpoint",
]


@dataclass(frozen=True)
class ShardPosition:
    index: str  # concrete index
    uuid: str
    shard: int
    global_checkpoint: int


async def shard_positions(es: AsyncElasticsearch, name: str) -> list[ShardPosition]:
    """Every primary shard behind ``name``; [] when nothing by that name exists (yet)."""
    try:
        resp = await es.indices.stats(
            index=name, metric="docs", level="shards", filter_path=STATS_FILTER
        )
    except NotFoundError:
        return []
    out = []
    for index, stats in (resp.get("indices") or {}).items():
        for shard, copies in (stats.get("shards") or {}).items():
            for copy in copies:
                if copy.get("routing", {}).get("primary"):
                    gcp = int(copy.get("seq_no", {}).get("global_checkpoint", -1))
                    out.append(ShardPosition(index, stats["uuid"], int(shard), gcp))
    return sorted(out, key=lambda p: (p.index, p.shard))


@dataclass
class _Runner:
    feed: ShardFeed
    target: int = -1  # latest global checkpoint seen
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _log_failure(what: str, exc: BaseException, delay: float) -> None:
    level = logging.WARNING if is_transient(exc) else logging.ERROR
    log.log(level, "%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)


class _Patience:
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


class Follower:
    """Keeps the vector field of one configured index in step with its text."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        service: EmbeddingService,
        target: IndexTarget,
        follow: FollowSettings,
        registry: Registry | None = None,
    ) -> None:
        self._es = es
        self._service = service
        self._follow = follow
        self.target = target
        self.progress = Progress()
        self._store = CheckpointStore(es, follow.state_index)
        self._runners: dict[tuple[str, int], _Runner] = {}
        self._stopping = asyncio.Event()
        self._metrics(registry)

    def _metrics(self, registry: Registry | None) -> None:
        r = registry or Registry()
        self._reported = self.progress.as_dict()
        outcomes = [key for key in self._reported if key != "total"]
        self._m_docs = r.counter(
            "es_embed_follow_documents_total",
            "Documents seen by the follower, by outcome.",
            ("index", "outcome"),
            known=[(self.target.name,), outcomes],
        )
        self._m_lag = r.gauge(
            "es_embed_follow_lag_operations",
            "Operations between checkpoint and global checkpoint.",
            ("index", "shard"),
        )

    def _report(self) -> None:
        now = self.progress.as_dict()
        for key, value in now.items():
            before = self._reported.get(key) or 0
            if key != "total" and value is not None and value > before:
                self._m_docs.labels(index=self.target.name, outcome=key).inc(value - before)
        self._reported = now
        for r in self._runners.values():
            lag = max(0, r.target - r.feed.checkpoint)
            self._m_lag.labels(index=r.feed.index, shard=str(r.feed.shard)).set(lag)

    @property
    def checkpoints(self) -> dict[tuple[str, int], int]:
        """(concrete index, shard) -> stored position, for status pages and tests."""
        return {(r.feed.index, r.feed.shard): r.feed.checkpoint for r in self._runners.values()}

    # ---- helpers ----------------------------------------------------------------------

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[T]], give_up: float | None = None
    ) -> T:
        backoff = Backoff(self._follow.poll_interval, self._follow.max_backoff)
        patience = _Patience(give_up)
        while True:
            try:
                return await call()
            except Exception as exc:
                delay = patience.delay(backoff.next())
                if delay is None:
                    raise
                _log_failure(what, exc, delay)
                await self._sleep(delay)
                if self._stopping.is_set():
                    raise

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when stop() is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _feed(self, pos: ShardPosition) -> ShardFeed:
        return ShardFeed(
            self._es,
            self._service,
            self.target,
            self._store,
            index=pos.index,
            uuid=pos.uuid,
            shard=pos.shard,
            page_size=self._follow.page_size,
            progress=self.progress,
        )

    # ---- serve: forever -----------------------------------------------------------------

    async def run(self) -> None:
        """Follow until stop(); Elasticsearch or model outages are waited out with backoff."""
        name = self.target.name
        await self._retrying(
            "creating the state index",
            lambda: ensure_state_index(self._es, self._follow.state_index),
        )
        log.info("following %s (%s, %d dims)", name, self.target.vector_field, self.target.dims)
        backoff = Backoff(self._follow.poll_interval, self._follow.max_backoff)
        while not self._stopping.is_set():
            try:
                positions = await shard_positions(self._es, name)
            except Exception as exc:
                delay = backoff.next()
                _log_failure(f"reading the shards of {name}", exc, delay)
                await self._sleep(delay)
                continue
            backoff.reset()
            await self._dispatch(positions)
            self._report()
            await self._sleep(self._follow.poll_interval)

    async def _dispatch(self, positions: list[ShardPosition]) -> None:
        seen = set()
        for pos in positions:
            key = (pos.uuid, pos.shard)
            seen.add(key)
            runner = self._runners.get(key)
            if runner is None:
                runner = self._runners[key] = _Runner(self._feed(pos))
                runner.task = asyncio.create_task(
                    self._run_shard(runner), name=f"es-embed-follow-{pos.index}-{pos.shard}"
                )
            if pos.global_checkpoint > runner.target:
                runner.target = pos.global_checkpoint
                runner.wake.set()
        gone = [key for key in self._runners if key not in seen]
        for key in gone:
            runner = self._runners.pop(key)
            log.info("%s shard %d is gone (index deleted or left %s); dropping its feed",
                     runner.feed.index, runner.feed.shard, self.target.name)  # fmt: skip
            await self._cancel(runner)
            with contextlib.suppress(Exception):
                await self._store.forget(runner.feed.uuid, runner.feed.shard + 1)

    async def _run_shard(self, runner: _Runner) -> None:
        feed = runner.feed
        backoff = Backoff(self._follow.poll_interval, self._follow.max_backoff)
        loaded = False
        while True:
            await runner.wake.wait()
            runner.wake.clear()
            try:
                if not loaded:
                    await feed.load()
                    loaded = True
                while runner.target > feed.checkpoint:
                    await feed.catch_up(runner.target)
                backoff.reset()
            except IndexGone:
                return  # the supervisor notices on its next poll
            except Exception as exc:
                # Checkpoint unchanged: the next attempt re-reads from the last written page.
                delay = backoff.next()
                _log_failure(f"following {feed.index} shard {feed.shard}", exc, delay)
                await asyncio.sleep(delay)
                runner.wake.set()

    @staticmethod
    async def _cancel(runner: _Runner) -> None:
        if runner.task is not None:
            runner.task.cancel()
            await asyncio.gather(runner.task, return_exceptions=True)

    async def stop(self) -> None:
        """Stop following; the last fully written position of every shard stays stored."""
        self._stopping.set()
        for runner in list(self._runners.values()):
            await self._cancel(runner)
            with contextlib.suppress(Exception):
                await runner.feed.save()
        self._report()

    # ---- backfill: up to now, then return ------------------------------------------------

    async def run_once_to_current(self, give_up: float | None = None) -> Progress:
        """Process every shard up to the global checkpoint current at the start, then return.

        ``give_up``: after failing this many seconds in a row, raise the last failure.
        """
        await self._retrying(
            "creating the state index",
            lambda: ensure_state_index(self._es, self._follow.state_index),
            give_up,
        )
        positions = await self._retrying(
            f"reading the shards of {self.target.name}",
            lambda: shard_positions(self._es, self.target.name),
            give_up,
        )
        runners = []
        for pos in positions:
            runner = _Runner(self._feed(pos), pos.global_checkpoint)
            # Registered for stop() and checkpoints, unless run() already follows that shard.
            self._runners.setdefault((pos.uuid, pos.shard), runner)
            await self._retrying(
                f"loading the checkpoint of {pos.index}", runner.feed.load, give_up
            )
            runners.append(runner)
        total = 0
        for r in runners:
            if r.target > r.feed.checkpoint:
                total += await self._retrying(
                    f"counting {r.feed.index}",
                    functools.partial(r.feed.count_pending, r.target),
                    give_up,
                )
        self.progress.total = (self.progress.total or 0) + total
        await asyncio.gather(*(self._catch_up_to(r, give_up) for r in runners))
        self._report()
        return self.progress

    async def _catch_up_to(self, runner: _Runner, give_up: float | None) -> None:
        feed = runner.feed
        backoff = Backoff(self._follow.poll_interval, self._follow.max_backoff)
        patience = _Patience(give_up)
        while runner.target > feed.checkpoint and not self._stopping.is_set():
            before = feed.checkpoint
            try:
                await feed.catch_up(runner.target)
            except IndexGone:
                return
            except Exception as exc:
                if feed.checkpoint > before:
                    patience.reset()  # pages went in: the clock counts failures in a row
                delay = patience.delay(backoff.next())
                if delay is None:
                    raise
                _log_failure(f"back-filling {feed.index} shard {feed.shard}", exc, delay)
                await self._sleep(delay)


@contextlib.asynccontextmanager
async def running_followers(
    settings: Settings,
    service: EmbeddingService,
    es: AsyncElasticsearch,
    registry: Registry | None = None,
) -> AsyncIterator[list[Follower]]:
    """Followers for every configured index, running in the background while inside.

    For ``es-embed serve``: the API's cleanup_ctx enters this after the embedding service
    has started and leaves it before stopping the service.
    """
    followers: list[Follower] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        if settings.follow.enabled:
            followers = [
                Follower(es, service, target, settings.follow, registry)
                for target in resolve_all(settings.indices, service.info.shape)
            ]
        tasks = [
            asyncio.create_task(f.run(), name=f"es-embed-follow-{f.target.name}") for f in followers
        ]
        yield followers
    finally:
        await asyncio.gather(*(f.stop() for f in followers), return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
