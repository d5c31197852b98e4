"""Prometheus metrics on prometheus-client, with one registry per app (never the global one).

``Registry`` is a ``CollectorRegistry`` that also carries the process and platform metrics
and declares each metric once with its label names. Components that share a registry (one
follower per configured index) ask for the same metric and get the same object, where
prometheus-client alone would refuse the second registration. Label values known up front
are created at zero, so an ``increase()`` alert sees the first event too.

Adding a metric is one line in the component that records it, e.g.
``registry.counter("es_embed_x_total", "What it counts.", ("lane",), known=[LANES])``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)

# The content type of what prometheus_client.generate_latest writes. Newer versions point
# CONTENT_TYPE_LATEST at text format 1.0.0, which they send only with a negotiated escaping;
# for a plain scrape their own exporters send 0.0.4, the format this renderer writes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

M = TypeVar("M", Counter, Gauge, Histogram)
Names = Sequence[str]  # label names, in order
Known = Sequence[Sequence[str]]  # for each label name, the values known up front


class Registry(CollectorRegistry):
    """One app's metrics: process and platform collectors plus everything declared on it."""

    def __init__(self) -> None:
        super().__init__()
        ProcessCollector(registry=self)
        PlatformCollector(registry=self)
        self._declared: dict[str, tuple[tuple[str, ...], Counter | Gauge | Histogram]] = {}
        self._declaring = threading.Lock()  # not _lock: CollectorRegistry has its own

    def counter(self, name: str, doc: str, labels: Names = (), *, known: Known = ()) -> Counter:
        """``known``: the values of each label (in order) to create at zero, all combinations."""
        return self._declare(Counter, name, doc, labels, known)

    def gauge(self, name: str, doc: str, labels: Names = (), *, known: Known = ()) -> Gauge:
        return self._declare(Gauge, name, doc, labels, known)

    def histogram(
        self,
        name: str,
        doc: str,
        labels: Names = (),
        *,
        known: Known = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return self._declare(Histogram, name, doc, labels, known, buckets=buckets)

    def _declare(
        self,
        kind: type[M],
        name: str,
        doc: str,
        labels: Names,
        known: Known,
        **options: Any,
    ) -> M:
        if known and len(known) != len(labels):
            raise ValueError(f"{name}: known values for {len(known)} labels, not {len(labels)}")
        with self._declaring:
            entry = self._declared.get(name)
            if entry is None:
                created = kind(name, doc, labels, registry=self, **options)
                entry = self._declared[name] = (tuple(labels), created)
        declared_labels, metric = entry
        if not isinstance(metric, kind) or declared_labels != tuple(labels):
            raise ValueError(
                f"{name} is already a {type(metric).__name__} with labels {declared_labels}, "
                f"not a {kind.__name__} with {tuple(labels)}"
            )
        if known:
            for values in itertools.product(*known):
                metric.labels(*values)
        return metric
