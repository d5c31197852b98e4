"""A tiny Prometheus text-format registry: counters, gauges and histograms with labels.

Kept in-house (about 100 lines) so every layer can record without importing HTTP code and
without a global default registry: each app builds one ``Registry`` and passes it down.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = list(labels) + ([extra] if extra else [])
    if not items:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in items
    )
    return "{" + body + "}"


class _Metric:
    kind = ""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.doc = name, doc
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, doc: str) -> None:
        super().__init__(name, doc)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_fmt_labels(k)} {v:g}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, doc: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, doc)
        self.buckets = tuple(buckets)
        self._data: dict[Labels, list[float]] = {}  # bucket counts..., sum, count

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            row = self._data.setdefault(key, [0.0] * (len(self.buckets) + 2))
            slot = bisect.bisect_left(self.buckets, value)
            if slot < len(self.buckets):  # above the last bound counts only towards +Inf
                row[slot] += 1
            row[-2] += value
            row[-1] += 1

    def count(self, **labels: str) -> float:
        row = self._data.get(tuple(sorted(labels.items())))
        return row[-1] if row else 0.0

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._data.items())
        for key, row in items:
            cumulative = 0.0
            for bound, n in zip(self.buckets, row, strict=False):
                cumulative += n
                lines.append(
                    f"{self.name}_bucket{_fmt_labels(key, ('le', f'{bound:g}'))} {cumulative:g}"
                )
            lines.append(f"{self.name}_bucket{_fmt_labels(key, ('le', '+Inf'))} {row[-1]:g}")
            lines.append(f"{self.name}_sum{_fmt_labels(key)} {row[-2]:g}")
            lines.append(f"{self.name}_count{_fmt_labels(key)} {row[-1]:g}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _get(self, cls: type, name: str, doc: str, *args: object) -> _Metric:
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = cls(name, doc, *args)
        return metric

    def counter(self, name: str, doc: str) -> Counter:
        return self._get(Counter, name, doc)  # type: ignore[return-value]

    def gauge(self, name: str, doc: str) -> Gauge:
        return self._get(Gauge, name, doc)  # type: ignore[return-value]

    def histogram(
        self, name: str, doc: str, buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return self._get(Histogram, name, doc, buckets)  # type: ignore[return-value]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())  # type: ignore[attr-defined]
        return "\n".join(lines) + "\n"
