"""The devices behind the lanes: one model replica per device, and on each one loop per lane,
each taking the next batch of its lane as soon as its model thread is free.

``model.devices`` loads a replica of the embedder (and of the reranker) on each device; every
device's query loop and bulk loop wait on the lanes for a batch cut to that device's pace
(``pace.py``: its token budget and measured speed). Both lanes run at once on a device: a
bulk pass in flight stands aside for a query at its next layer boundary (``turns.py``), and
every bulk batch is still bounded in model time. An out-of-memory split stays on its device.

A model failure (anything but running out of memory) takes its device out of the rotation,
both its loops: the batch's waiters get 503, and the device is probed every
``probe_interval_seconds`` until a probe passes, while the other devices keep serving the
lanes. Only while no device is up is the service unhealthy: queued requests fail with 503,
new ones are refused at once. With one device that is the single-device rule: a failure
fails everything waiting and /health says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from es_embed.config import BatchSettings
from es_embed.embed.batching import Item
from es_embed.embed.lanes import LANES, Lanes
from es_embed.embed.memory import too_large_for_memory
from es_embed.embed.pace import Pace
from es_embed.embed.protocol import Encoder, Lane, ModelKind, Reranker, Tokenized
from es_embed.embed.runner import ModelRunner
from es_embed.errors import EmbedError, unavailable
from es_embed.metrics import Registry

log = logging.getLogger(__name__)

ProbeTokens = Callable[[ModelKind], Awaitable[list[Tokenized]]]


@dataclass(frozen=True)
class Replica:
    """One device's copy of the models (the reranker too, where one is configured)."""

    encoder: Encoder
    reranker: Reranker | None = None


def device_names(devices: Sequence[str]) -> list[str]:
    """Each replica's name in metrics and logs: its device, numbered where a device repeats
    (two CPU replicas are cpu/0 and cpu/1)."""
    repeats = Counter(devices)
    seen: Counter[str] = Counter()
    names = []
    for device in devices:
        names.append(f"{device}/{seen[device]}" if repeats[device] > 1 else device)
        seen[device] += 1
    return names


@dataclass(eq=False)
class Worker:
    runner: ModelRunner
    pace: Pace
    in_flight: dict[Lane, list[Item]] = field(default_factory=dict)  # on its model threads
    failure: str | None = None  # why it is out of the rotation
    failed_kind: ModelKind = "embed"  # the model its probe must see working again
    up: asyncio.Event = field(default_factory=asyncio.Event)  # set while it takes work

    @property
    def device(self) -> str:
        return self.runner.device


class Workers:
    def __init__(
        self,
        replicas: Sequence[Replica],
        lanes: Lanes,
        batching: BatchSettings,
        registry: Registry,
        probe_tokens: ProbeTokens,
    ) -> None:
        names = device_names([r.encoder.info.device for r in replicas])
        self._workers = [
            Worker(ModelRunner(r.encoder, r.reranker, registry, name), pace)
            for r, name, pace in zip(replicas, names, lanes.paces, strict=True)
        ]
        self._lanes = lanes
        self._batching = batching
        self._probe_tokens = probe_tokens
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: str | None = None  # set while every device is out
        self._m_failures = registry.counter(
            "es_embed_model_failures_total", "Forward passes that raised."
        )
        self._m_healthy = registry.gauge(
            "es_embed_healthy", "1 while the service can embed: at least one device is up."
        )
        self._m_up = registry.gauge(
            "es_embed_device_up",
            "1 while the device takes work; 0 after its model failed, until a probe passes.",
            ("device",),
            known=[names],
        )

    @property
    def devices(self) -> list[str]:
        return [w.device for w in self._workers]

    def layers(self, device: int) -> int:
        """The layer boundaries at which a bulk pass on device number ``device`` stands aside
        for a query (0: its model has no hooks, and a query waits for the pass)."""
        return self._workers[device].runner.layers

    @property
    def failure(self) -> str | None:
        """Why no device can take work (the last one to fail), or None while one can."""
        return self._failure

    def busy(self) -> bool:
        return any(batch for w in self._workers for batch in w.in_flight.values())

    def stopped(self) -> bool:
        """A device's loop ended (it never should): its share of the work would wait forever."""
        return any(t.done() for t in self._tasks)

    def start(self) -> None:
        for w in self._workers:
            w.runner.start()
            w.up.set()
            self._m_up.labels(device=w.device).set(1)
        self._tasks = [
            asyncio.create_task(self._serve(w, lane), name=f"es-embed-{lane}-{w.device}")
            for w in self._workers
            for lane in LANES
        ]
        self._m_healthy.set(1)

    async def stop(self, error: EmbedError) -> None:
        """End every device's loop; a batch still on a model thread is answered ``error``
        rather than left waiting for a loop that is gone."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self._workers:
            for batch in w.in_flight.values():
                _fail(batch, error)
            w.in_flight.clear()
            w.runner.shutdown()

    async def run_batch(
        self,
        lane: Lane,
        kind: ModelKind,
        tokens: list[Tokenized],
        record: bool = True,
        device: int = 0,
    ) -> list[np.ndarray | None]:
        """One batch on the model thread of device number ``device`` (its loop's, or the
        warm-up's), split while it runs out of memory; its time and whether it fitted go to
        that device's pace (the metrics only if ``record``). None for an input that does not
        fit even alone."""
        w = self._workers[device]
        parts, seconds = await w.runner.run(lane, kind, tokens, record)
        w.pace.ran(lane, tokens, seconds, parts.failed_tokens, kind)
        self._lanes.ran(lane)
        if parts.failed_tokens is not None:
            log.warning(
                "out of memory on a batch of %d inputs%s: split %d times; token budget lowered "
                "to %d for a while",
                len(tokens),
                self._on(w),
                parts.splits,
                w.pace.budget.current,
            )
        return parts.rows

    async def _serve(self, w: Worker, lane: Lane) -> None:
        """One device's loop for one lane."""
        device = self._workers.index(w)
        other: Lane = "bulk" if lane == "query" else "query"

        def busy() -> bool:  # the device's other lane has a pass on it: let a free one go first
            return other in w.in_flight

        while True:
            await w.up.wait()
            batch = await self._lanes.next_batch(w.pace, lane, busy)
            if w.failure is not None:  # the device went out while this loop waited for work
                self._lanes.give_back(lane, batch)
                continue
            kind = batch[0].request.kind  # one model per batch (cut_batch)
            w.in_flight[lane] = batch
            try:
                rows = await self.run_batch(lane, kind, [it.tokens for it in batch], True, device)
            except Exception as exc:  # any model failure: fail its waiters, probe the device
                w.in_flight.pop(lane, None)
                if self._on_failure(w, exc, batch, kind):
                    await self._probe_until_up(w)
                continue
            w.in_flight.pop(lane, None)
            _deliver(batch, rows, w.device)

    def _on_failure(
        self, w: Worker, exc: BaseException, batch: list[Item], kind: ModelKind
    ) -> bool:
        """Fail the batch's waiters; True if this failure took the device out (its loop then
        probes it), False if the device was out already (the other lane's pass failed)."""
        which = "reranker" if kind == "rerank" else "model"
        failure = f"{which} forward pass failed{self._on(w)}: {type(exc).__name__}: {exc}"
        error = unavailable(f"the model is unavailable: {failure}")
        self._m_failures.inc()
        _fail(batch, error)
        if w.failure is not None:
            return False
        w.failure = failure
        w.failed_kind = kind
        w.up.clear()
        self._m_up.labels(device=w.device).set(0)
        if all(other.failure is not None for other in self._workers):
            log.error("%s; failing waiting requests and probing for recovery", w.failure)
            self._failure = w.failure
            self._m_healthy.set(0)
            self._lanes.fail_all(error)
        else:
            up = ", ".join(o.device for o in self._workers if o.failure is None)
            log.error("%s; probing it for recovery while %s serve", w.failure, up)
        return True

    async def _probe_until_up(self, w: Worker) -> None:
        while w.failure is not None:
            await asyncio.sleep(self._batching.probe_interval_seconds)
            try:
                probe = await self._probe_tokens(w.failed_kind)
                await w.runner.forward(w.failed_kind, probe)
            except Exception as exc:
                log.warning("model probe%s still failing: %s", self._on(w), exc)
                continue
            back = "the embedding service is healthy again" if self._failure else "it takes work"
            log.info("model probe%s succeeded; %s", self._on(w), back)
            w.failure = None
            w.up.set()
            self._failure = None
            self._m_healthy.set(1)
            self._m_up.labels(device=w.device).set(1)

    def _on(self, w: Worker) -> str:
        """Where, in messages: the device, unless there is only one (the messages of one
        device stay what they were before there could be several)."""
        return f" on {w.device}" if len(self._workers) > 1 else ""


def _deliver(batch: list[Item], rows: list[np.ndarray | None], device: str) -> None:
    for item, vector in zip(batch, rows, strict=True):
        req = item.request
        if req.cancelled or req.future.done():
            continue
        if vector is None:
            req.future.set_exception(too_large_for_memory(item, device))
            continue
        req.vectors[item.index] = vector
        req.remaining -= 1
        if req.remaining == 0:
            req.future.set_result(np.stack(req.vectors))


def _fail(batch: list[Item], error: EmbedError) -> None:
    for item in batch:
        if not item.request.future.done():
            item.request.future.set_exception(error)
