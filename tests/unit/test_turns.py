"""Turns on one device (``turns.py``): a query's pass goes ahead of the bulk pass in flight at
that pass's next layer boundary, with real threads; and in the service, a query answered
while a long bulk pass is still on the device."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np

from es_embed.config import BatchSettings, ModelSettings
from es_embed.embed.service import EmbeddingService
from es_embed.embed.turns import Turn, Turns
from es_embed.metrics import Registry
from tests.fakes import FakeEncoder, LayeredEncoder


def bulk_pass(
    turns: Turns,
    events: list[str],
    layers: int,
    work: dict[int, Callable[[], None]],
    result: list[Turn],
) -> None:
    """A bulk pass of ``layers`` layers, layer i doing ``work[i]`` (by default, a short sleep)."""
    with turns.bulk() as turn:
        for i in range(layers):
            turns.between_layers()
            events.append(f"bulk {i}")
            work.get(i, lambda: time.sleep(0.01))()
    result.append(turn)


def test_a_query_runs_at_the_bulk_passs_next_layer_boundary() -> None:
    turns, events, result = Turns(), [], []
    in_layer_1 = threading.Event()

    def layer_1() -> None:  # lasts until the query wants the device
        in_layer_1.set()
        # The query is then blocked inside Turns.query(); nothing public says when it is
        # counted, and a sleep would make the test depend on the machine's load.
        deadline = time.monotonic() + 5
        while not turns._queries and time.monotonic() < deadline:
            time.sleep(0.001)

    thread = threading.Thread(target=bulk_pass, args=(turns, events, 5, {1: layer_1}, result))
    thread.start()
    assert in_layer_1.wait(5)
    with turns.query() as query_turn:
        events.append("query")
        turns.between_layers()  # a query's own layers never pause it
        events.append("query done")
    thread.join(5)
    # The query waited for the layer in flight, not for the rest of the pass.
    assert events == ["bulk 0", "bulk 1", "query", "query done", "bulk 2", "bulk 3", "bulk 4"]
    (turn,) = result
    assert turn.pauses == 1 and turn.paused > 0
    assert query_turn.waited > 0 and query_turn.pauses == 0


def test_a_bulk_pass_waits_for_the_query_on_the_device() -> None:
    turns, events, result = Turns(), [], []
    with turns.query():
        thread = threading.Thread(target=bulk_pass, args=(turns, events, 2, {}, result))
        thread.start()
        time.sleep(0.05)
        assert events == []  # the bulk pass has not begun
        events.append("query")
    thread.join(5)
    assert events == ["query", "bulk 0", "bulk 1"]
    assert result[0].waited > 0 and result[0].pauses == 0


def test_outside_a_bulk_pass_the_hook_never_blocks() -> None:
    turns = Turns()
    with turns.query():
        started = time.perf_counter()
        turns.between_layers()  # a query waiting, but this thread runs no bulk pass
        assert time.perf_counter() - started < 1


async def test_the_service_answers_a_query_while_a_long_bulk_pass_stands_aside() -> None:
    layers, seconds_per_layer = 20, 0.05  # a one-second bulk pass
    enc = LayeredEncoder(layers=layers, seconds_per_layer=seconds_per_layer)
    entered = threading.Event()
    enc.on_layer(entered.set)
    registry = Registry()
    batching = BatchSettings(max_bulk_batch_ms=0, max_batch_size=64)
    svc = EmbeddingService(enc, batching, ModelSettings(name="fake"), registry=registry)
    await svc.start()
    try:
        docs = [f"document {i} about alpha" for i in range(4)]
        bulk = asyncio.create_task(svc.embed(docs))
        await asyncio.to_thread(entered.wait, 5)  # the bulk pass is on the device
        query = await svc.embed(["which document?"], input_type="query")
        answered_first = not bulk.done()  # while the bulk pass was still on the device
        embedded = (await bulk).vectors
    finally:
        await svc.stop()
    assert answered_first
    assert registry.get_sample_value("es_embed_bulk_pauses_total", {"device": "cpu"}) == 1
    plain = FakeEncoder()  # the same vectors as an unpaused pass
    np.testing.assert_allclose(embedded, plain.forward(plain.tokenize(docs)), atol=1e-6)
    assert query.vectors.shape == (1, 64)
