"""A one-line progress display on stderr: counts, docs/s and ETA, no extra dependency.

On a terminal the line is redrawn in place (``\\r``) a few times a second; otherwise
(logs, CI) a plain line is printed every few seconds.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render(label: str, done: int, total: int | None, elapsed: float, **counts: int) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    head = f"{label} {done:,}"
    if total:
        head += f"/{total:,} ({min(100, 100 * done // max(total, 1))}%)"
    extra = "".join(f" {k} {v:,}" for k, v in counts.items())
    eta = ""
    if total and rate > 0 and done < total:
        eta = f" ETA {_duration((total - done) / rate)}"
    return f"{head}{extra} {rate:,.0f} docs/s{eta}"


class ProgressLine:
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._interval = 0.2 if self._tty else 5.0
        self._started = time.monotonic()  # so create it when the work starts, not before
        self._last = float("-inf")  # the first update is always shown
        self._width = 0

    def update(self, done: int, total: int | None = None, *, force: bool = False,
               **counts: int) -> None:  # fmt: skip
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        line = render(self._label, done, total, now - self._started, **counts)
        if self._tty:
            self._stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self, done: int, total: int | None = None, **counts: int) -> None:
        self.update(done, total, force=True, **counts)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
