"""Turns on one device: a query's forward pass goes ahead of the bulk pass in flight, at that
pass's next layer boundary.

Each device has two model threads (``runner.py``): one for the query lane, one for the bulk
lane. Run side by side they would share the device's cores (or its stream) and slow each
other; run one after the other, a query that arrives just after a bulk pass started waits
for all of it, and one bulk input can take longer than a query's whole budget (a 240-token
document on a 2-core CPU: about 70 ms, against 25 ms for the query). So they take turns at a
finer grain: the bulk thread calls ``between_layers`` before each transformer layer (the
encoder's hooks, ``Layered``), and there it stands aside while a query wants the device. A
query then waits for at most one layer of the bulk pass, and a bulk batch can stay long
enough to be efficient. Queries go first at every boundary, as they do in the lanes. (On a
GPU the boundary is where the host has got to; ``accelerator.RunAhead`` keeps that within
two layers of the device.)

Pure threading: no torch, no event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class Layered(Protocol):
    """An encoder whose forward pass can call ``hook`` before each of its layers (on the
    thread running the pass). An encoder without it still works: its bulk passes are simply
    not paused, so a query waits for the pass in flight."""

    def on_layer(self, hook: Callable[[], None]) -> int:
        """Call ``hook`` before every layer from now on; returns how many layers it found."""
        ...


@dataclass
class Turn:
    """What a pass waited: for its turn before it began, and (bulk) paused for queries."""

    waited: float = 0.0
    paused: float = 0.0
    pauses: int = 0


class Turns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queries = 0  # query passes running or waiting for the device
        self._bulk_on_device = False  # a bulk pass holds the device (not paused)
        self._bulk: tuple[int, Turn] | None = None  # the bulk pass's thread and its turn

    @contextmanager
    def query(self) -> Iterator[Turn]:
        """A query pass: waits until the bulk pass in flight (if any) reaches a layer
        boundary, then has the device to itself."""
        turn = Turn()
        started = time.perf_counter()
        with self._cond:
            self._queries += 1
            while self._bulk_on_device:
                self._cond.wait()
        turn.waited = time.perf_counter() - started
        try:
            yield turn
        finally:
            with self._cond:
                self._queries -= 1
                self._cond.notify_all()

    @contextmanager
    def bulk(self) -> Iterator[Turn]:
        """A bulk pass: begins once no query wants the device, and stands aside for one at
        each ``between_layers``."""
        turn = Turn()
        started = time.perf_counter()
        with self._cond:
            while self._queries:
                self._cond.wait()
            self._bulk_on_device = True
            self._bulk = (threading.get_ident(), turn)
        turn.waited = time.perf_counter() - started
        try:
            yield turn
        finally:
            with self._cond:
                self._bulk_on_device = False
                self._bulk = None
                self._cond.notify_all()

    def between_layers(self) -> None:
        """The encoders' layer hook. On the bulk pass's thread, with a query waiting: stand
        aside until no query wants the device. Anywhere else (a query's own layers, the
        reranker's, a warm-up pass outside a turn) it does nothing."""
        if not self._queries:  # the common case, read without the lock: a query that comes
            return  # just after this check waits for the next boundary
        bulk = self._bulk
        if bulk is None or bulk[0] != threading.get_ident():
            return
        turn = bulk[1]
        started = time.perf_counter()
        with self._cond:
            self._bulk_on_device = False
            self._cond.notify_all()
            while self._queries:
                self._cond.wait()
            self._bulk_on_device = True
        turn.paused += time.perf_counter() - started
        turn.pauses += 1
