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

from elasticsearch import AsyncElasticsearch

from es_embed.config import FollowSettings, Settings
from es_embed.elastic.retry import Backoff, Patience, is_transient
from es_embed.embed.service import EmbeddingService
from es_embed.follow.feed import IndexGone, Progress, ShardFeed
from es_embed.follow.leases import FencedCheckpoints, LeaseLost, ShardKey, ShardLeases
from es_embed.follow.positions import ShardPosition, shard_positions
from es_embed.follow.state import CheckpointStore, count_failures
from es_embed.indices.resolve import IndexTarget, resolve_all
from es_embed.metrics import Registry

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Runner:
    feed: ShardFeed
    target: int = -1  # latest global checkpoint seen
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


def _log_failure(what: str, exc: BaseException, delay: float) -> None:
    level = logging.WARNING if is_transient(exc) else logging.ERROR
    log.log(level, "%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)


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
        self._leases = ShardLeases(es, follow, target.name)
        self._fenced = FencedCheckpoints(es, self._leases, follow.state_index)
        self._lease_keys: set[ShardKey] = set()  # the shards seen by the last lease round
        self._next_round = 0.0
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
        self._m_owned = r.gauge(
            "es_embed_follow_shards_owned",
            "Shards whose lease this replica holds.",
            ("index",),
            known=[(self.target.name,)],
        )
        self._m_failed = r.gauge(
            "es_embed_follow_failed_documents",
            "Documents on record as failed in the state index (listed by es-embed status).",
            ("index",),
            known=[(self.target.name,)],
        )
        self._failures_seen: tuple[int, int] | None = None  # (failed, recovered) last counted

    async def _report_failures(self) -> None:
        """Count the failure records again whenever this follower added or removed one."""
        seen = (self.progress.failed, self.progress.recovered)
        if seen == self._failures_seen:
            return
        try:
            n = await count_failures(self._es, self._follow.state_index, [self.target.name])
        except Exception:  # Elasticsearch away: keep the last value, count on a later poll
            return
        self._failures_seen = seen
        self._m_failed.labels(index=self.target.name).set(n)

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
        patience = Patience(give_up)
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

    def _feed(self, pos: ShardPosition, store: CheckpointStore) -> ShardFeed:
        return ShardFeed(
            self._es,
            self._service,
            self.target,
            store,
            index=pos.index,
            uuid=pos.uuid,
            shard=pos.shard,
            page_size=self._follow.page_size,
            progress=self.progress,
        )

    async def _ensure_state(self) -> None:
        await self._store.ensure([self.target.name])

    # ---- serve: forever -----------------------------------------------------------------

    async def run(self) -> None:
        """Follow until stop(); Elasticsearch or model outages are waited out with backoff."""
        name = self.target.name
        await self._retrying("creating the state index", self._ensure_state)
        t = self.target
        log.info("following %s (%s, %d dims) as replica %s",
                 name, t.vector_field, t.dims, self._leases.replica)  # fmt: skip
        backoff = Backoff(self._follow.poll_interval, self._follow.max_backoff)
        lease_backoff = Backoff(self._follow.poll_interval, self._leases.round_seconds)
        while not self._stopping.is_set():
            try:
                positions = await shard_positions(self._es, name)
            except Exception as exc:
                delay = backoff.next()
                _log_failure(f"reading the shards of {name}", exc, delay)
                await self._sleep(delay)
                continue
            backoff.reset()
            await self._lease_round(positions, lease_backoff)
            await self._dispatch(positions)
            self._report()
            await self._report_failures()
            await self._sleep(self._follow.poll_interval)

    async def _lease_round(self, positions: list[ShardPosition], backoff: Backoff) -> None:
        """Renew, claim and hand back leases: every round, and at once when shards appear."""
        keys = {(p.uuid, p.shard) for p in positions}
        started = time.monotonic()
        if started < self._next_round and keys <= self._lease_keys:
            return
        try:
            await self._leases.round(positions, self._stop_shard)
        except Exception as exc:
            delay = backoff.next()
            _log_failure(f"renewing the shard leases of {self.target.name}", exc, delay)
            self._next_round = time.monotonic() + delay
        else:
            backoff.reset()
            self._lease_keys = keys
            # From the start: renewals every round_seconds, however long a round takes.
            self._next_round = started + self._leases.round_seconds
        self._m_owned.labels(index=self.target.name).set(len(self._leases.held))

    async def _stop_shard(self, key: ShardKey) -> None:
        """End a shard's feed at once: its lease is lost, lapsed or being handed back."""
        runner = self._runners.pop(key, None)
        if runner is not None:
            await self._cancel(runner)
            with contextlib.suppress(Exception):  # LeaseLost: the owner resumes from the last
                await runner.feed.save()

    async def _dispatch(self, positions: list[ShardPosition]) -> None:
        seen = set()
        for pos in positions:
            key = (pos.uuid, pos.shard)
            seen.add(key)
            if key not in self._leases.held:
                continue  # another replica's (a lost lease's feed is stopped by _stop_shard)
            runner = self._runners.get(key)
            if runner is None:
                runner = self._runners[key] = _Runner(self._feed(pos, self._fenced))
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
            self._leases.forget(key)
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
            except LeaseLost:
                log.warning("replica %s lost %s shard %d; stopping its feed",
                            self._leases.replica, feed.index, feed.shard)  # fmt: skip
                self._runners.pop((feed.uuid, feed.shard), None)
                return
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
        with contextlib.suppress(Exception):  # else the leases lapse by themselves
            await self._leases.leave()
        self._m_owned.labels(index=self.target.name).set(len(self._leases.held))
        self._report()

    # ---- backfill: up to now, then return ------------------------------------------------

    async def run_once_to_current(self, give_up: float | None = None) -> Progress:
        """Process every shard up to the global checkpoint current at the start, then return.

        ``give_up``: after failing this many seconds in a row, raise the last failure.
        """
        await self._retrying("creating the state index", self._ensure_state, give_up)
        positions = await self._retrying(
            f"reading the shards of {self.target.name}",
            lambda: shard_positions(self._es, self.target.name),
            give_up,
        )
        runners = []
        for pos in positions:
            runner = _Runner(self._feed(pos, self._store), pos.global_checkpoint)
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
        patience = Patience(give_up)
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
