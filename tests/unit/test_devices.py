"""Several devices in one service (``model.devices``), with a fake replica per device.

The fakes block on events rather than on time, so which device holds which batch is decided
by the test, never by a race: two batches in the models at once, queries still first, every
answer right and in order, a failing device dropped while the other serves (and the service
unhealthy only when none is left), out-of-memory splits and model speed kept per device.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from es_embed.config import BatchSettings, ConfigError, ModelSettings, settings_from_dict
from es_embed.embed.batching import Request
from es_embed.embed.devices import resolve_devices
from es_embed.embed.lanes import Lanes
from es_embed.embed.protocol import Tokenized
from es_embed.embed.service import EmbeddingService
from es_embed.embed.workers import Replica, device_names
from es_embed.errors import EmbedError, ErrorKind
from es_embed.metrics import Registry
from tests.fakes import FakeEncoder, GatedEncoder, HeldEncoder, OutOfMemoryEncoder


def two_devices(
    first: FakeEncoder, second: FakeEncoder, registry: Registry | None = None, **batching: Any
) -> EmbeddingService:
    return EmbeddingService(
        first,
        BatchSettings(**batching),
        ModelSettings(name="fake"),
        registry,
        replicas=[Replica(second)],
    )


def words(i: int, n: int = 3) -> str:
    return " ".join(f"w{i}x{j}" for j in range(n))


def expected(texts: Sequence[str]) -> np.ndarray:
    """What one fake alone gives for each text, one at a time."""
    ref = FakeEncoder()
    return np.concatenate([ref.forward(ref.tokenize([t])) for t in texts])


async def entered(*encoders: HeldEncoder | GatedEncoder) -> bool:
    return all([await asyncio.to_thread(e.entered.wait, 5) for e in encoders])


def release(*encoders: HeldEncoder) -> None:
    """Let the batch a held fake is in finish, and every later one pass."""
    for enc in encoders:
        enc.hold.clear()
        enc.release.set()


def test_replicas_are_named_by_device_and_numbered_where_one_repeats() -> None:
    assert device_names(["cpu", "cpu"]) == ["cpu/0", "cpu/1"]
    assert device_names(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    assert device_names(["cuda:0", "cpu", "cpu"]) == ["cuda:0", "cpu/0", "cpu/1"]


async def test_two_batches_are_in_the_models_at_once() -> None:
    first, second = GatedEncoder(), GatedEncoder()
    registry = Registry()
    svc = two_devices(first, second, registry, max_batch_size=2)
    await svc.start()
    try:
        assert svc.devices == ["cpu/0", "cpu/1"]
        work = asyncio.create_task(svc.embed([words(i) for i in range(4)]))
        # Neither gate is open: both devices hold a batch of two at the same time.
        assert await entered(first, second)
        assert first.seen == [[4, 4]] and second.seen == [[4, 4]]
        first.gate.set()
        second.gate.set()
        out = await work
        np.testing.assert_allclose(out.vectors, expected([words(i) for i in range(4)]), atol=1e-6)
        for device in svc.devices:
            sample = {"device": device}
            assert registry.get_sample_value("es_embed_device_batches_total", sample) == 1
            assert registry.get_sample_value("es_embed_device_forward_seconds_total", sample) > 0
    finally:
        first.gate.set()
        second.gate.set()
        await svc.stop()


async def test_a_freed_device_takes_the_query_before_queued_bulk_work() -> None:
    first, second = HeldEncoder(), HeldEncoder()
    first.hold.set()
    second.hold.set()
    svc = two_devices(first, second, max_batch_size=2)
    await svc.start()
    try:
        bulk = asyncio.create_task(svc.embed([words(i) for i in range(12)]))
        assert await entered(first, second)  # both devices busy, 8 documents still queued
        query = asyncio.create_task(svc.embed([words(99, 10)], input_type="query"))
        await asyncio.sleep(0.05)  # the query is queued behind nothing but the busy devices
        release(first)  # only the first device comes free
        assert (await query).vectors.shape == (1, 64)
        # The first device's batches: bulk, then the query (11 tokens), ahead of the bulk.
        assert first.batches[:2] == [2, 1]
        assert not bulk.done()  # the second device still holds its batch
        release(second)
        out = await bulk
        np.testing.assert_allclose(out.vectors, expected([words(i) for i in range(12)]), atol=1e-6)
    finally:
        release(first, second)
        await svc.stop()


async def test_a_query_goes_to_an_idle_device_not_one_busy_with_bulk_work() -> None:
    first, second = HeldEncoder(), FakeEncoder()
    first.hold.set()  # the first device's bulk pass stays on it (no layers to pause at)
    svc = two_devices(first, second, max_batch_size=1)
    await svc.start()
    try:
        bulk = []
        while not first.entered.is_set() and len(bulk) < 20:  # until one lands on the first
            bulk.append(asyncio.create_task(svc.embed([words(len(bulk))])))
            await asyncio.sleep(0.02)
        assert first.entered.is_set()
        # Both devices' query loops are free; the first's device is busy, so the second's
        # takes the query (the first's would make it wait for the held pass).
        query = await asyncio.wait_for(svc.embed([words(99, 10)], input_type="query"), 5)
        assert query.vectors.shape == (1, 64)
        assert not all(t.done() for t in bulk) and first.batches == []  # still held
        release(first)
        await asyncio.gather(*bulk)
    finally:
        release(first)
        await svc.stop()


async def test_concurrent_requests_get_their_own_vectors_in_order() -> None:
    first, second = FakeEncoder(seconds_per_token=1e-4), FakeEncoder(seconds_per_token=1e-4)
    svc = two_devices(first, second, max_batch_size=4)
    await svc.start()
    try:
        requests = [
            [words(100 * r + i, 1 + (i + r) % 5) for i in range(1 + r % 7)] for r in range(24)
        ]
        results = await asyncio.gather(*(svc.embed(texts) for texts in requests))
        for texts, out in zip(requests, results, strict=True):
            np.testing.assert_allclose(out.vectors, expected(texts), atol=1e-6)
        assert first.encoded_inputs > 0 and second.encoded_inputs > 0  # both devices worked
        assert first.encoded_inputs + second.encoded_inputs == sum(map(len, requests))
    finally:
        await svc.stop()


async def started_with_a_fault(
    first: FakeEncoder, second: FakeEncoder, failing: FakeEncoder, probe_interval_seconds: float
) -> tuple[EmbeddingService, Registry]:
    """Two devices, started, with ``failing`` raising a CUDA fault on every pass."""
    failing.failure = RuntimeError("CUDA error: an illegal memory access was encountered")
    registry = Registry()
    svc = two_devices(first, second, registry, probe_interval_seconds=probe_interval_seconds)
    await svc.start()
    return svc, registry


async def test_a_failing_device_is_dropped_while_the_other_serves_then_rejoins() -> None:
    first, second = HeldEncoder(), FakeEncoder()
    svc, registry = await started_with_a_fault(first, second, second, probe_interval_seconds=0.02)
    try:
        first.hold.set()
        # Whichever device takes the first request, the second request finds the other one:
        # one of the two meets the failing device; the other is answered by the first.
        one = asyncio.create_task(svc.embed(["one"]))
        await asyncio.sleep(0.05)
        two = asyncio.create_task(svc.embed(["two"]))
        assert await entered(first)
        # The one that met the failing device is answered 503 while the other is in the first
        # device's model, and the service stays healthy.
        done, _ = await asyncio.wait({one, two}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        [failed] = done
        error = failed.exception()
        assert isinstance(error, EmbedError) and error.kind is ErrorKind.UNAVAILABLE
        assert "failed on cpu/1" in error.message and "illegal memory" in error.message
        assert svc.health() == (True, None)
        release(first)
        [served] = {one, two} - done
        assert (await served).vectors.shape == (1, 64)
        assert registry.get_sample_value("es_embed_model_failures_total") == 1
        assert registry.get_sample_value("es_embed_healthy") == 1
        assert up(registry) == [1, 0]
        # The failed device takes no work while its probe fails; the other takes it all.
        done = await svc.embed([words(i) for i in range(20)])
        np.testing.assert_allclose(done.vectors, expected([words(i) for i in range(20)]), atol=1e-6)
        assert second.encoded_inputs == 0
        # Its probe passes once the fault is gone, and it takes work again.
        second.failure = None
        await wait_until(lambda: second.forward_calls > 0)  # the probe
        assert up(registry) == [1, 1]
        first.release.clear()
        first.entered.clear()
        first.hold.set()
        held = asyncio.create_task(svc.embed(["held"]))
        assert await entered(first)
        assert (await svc.embed(["served by the second"])).vectors.shape == (1, 64)
        assert second.encoded_inputs == 2  # the probe's input, then that request's
        release(first)
        await held
    finally:
        release(first)
        await svc.stop()


def up(registry: Registry) -> list[float | None]:
    return [
        registry.get_sample_value("es_embed_device_up", {"device": d}) for d in ("cpu/0", "cpu/1")
    ]


async def wait_until(condition: Any, tries: int = 250) -> None:
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_bulk_work_taken_by_a_device_that_went_out_is_given_to_the_other() -> None:
    first, second = FakeEncoder(), FakeEncoder()
    svc, registry = await started_with_a_fault(first, second, first, probe_interval_seconds=60)
    try:
        for _ in range(20):  # queries until the first device's query loop takes one and fails
            try:
                await svc.embed(["a query"], input_type="query")
            except EmbedError as exc:
                assert "failed on cpu/0" in exc.message
                break
        else:
            pytest.fail("the first device never took a query")
        assert registry.get_sample_value("es_embed_device_up", {"device": "cpu/0"}) == 0
        # The first device's bulk loop was not in a pass: it still waits on the lanes (the
        # first of the two to wait, so the first woken), takes this batch, finds its device
        # out and gives the batch back to the lane, for the second device.
        texts = [words(i) for i in range(6)]
        out = await asyncio.wait_for(svc.embed(texts), 5)
        np.testing.assert_allclose(out.vectors, expected(texts), atol=1e-6)
        assert first.encoded_inputs == 0 and second.encoded_inputs >= len(texts)
    finally:
        await svc.stop()


async def test_with_every_device_failing_the_service_is_unhealthy_until_one_recovers() -> None:
    first, second = FakeEncoder(), FakeEncoder()
    for enc in (first, second):
        enc.failure = RuntimeError("CUDA error: device lost")
    registry = Registry()
    svc = two_devices(first, second, registry, probe_interval_seconds=0.02)
    await svc.start()
    try:
        for _ in range(2):  # each request takes one device down with it
            with pytest.raises(EmbedError) as err:
                await svc.embed(["x"])
            assert err.value.kind is ErrorKind.UNAVAILABLE
        ok, reason = svc.health()
        assert not ok and reason is not None and "device lost" in reason
        assert registry.get_sample_value("es_embed_healthy") == 0
        assert up(registry) == [0, 0]
        with pytest.raises(EmbedError, match="the model is unavailable"):  # refused at once
            await svc.embed(["y"])
        second.failure = None
        await wait_until(lambda: svc.health()[0])
        assert registry.get_sample_value("es_embed_healthy") == 1
        out = await svc.embed(["z"])
        np.testing.assert_allclose(out.vectors, expected(["z"]), atol=1e-6)
        assert first.encoded_inputs == 0  # still failing: out of the rotation
    finally:
        await svc.stop()


async def test_out_of_memory_splits_and_lowers_the_budget_of_its_own_device_only() -> None:
    first, second = HeldEncoder(), OutOfMemoryEncoder(most_inputs=4)
    svc = two_devices(first, second, max_batch_tokens=1024)
    await svc.start()
    try:
        first.hold.set()
        held = asyncio.create_task(svc.embed(["held"]))
        assert await entered(first)  # the first device is busy: the next batch is the second's
        texts = [words(i) for i in range(16)]
        out = await svc.embed(texts)
        np.testing.assert_allclose(out.vectors, expected(texts), atol=1e-6)
        assert second.attempts == [16, 8, 4, 4, 4, 4]  # halved until each pass fits
        first_pace, second_pace = svc.lanes.paces
        assert second_pace.budget.current == 8 * 4 // 2  # below the smallest pass that failed
        assert first_pace.budget.current == 1024
        release(first)
        await held
    finally:
        release(first)
        await svc.stop()


def tokens(lengths: list[int]) -> list[Tokenized]:
    return [Tokenized(tuple(range(2, 2 + n)), n) for n in lengths]


async def test_each_device_gets_bulk_batches_cut_to_its_own_speed() -> None:
    registry = Registry()
    ln = Lanes(BatchSettings(max_bulk_batch_ms=25), registry, devices=2)
    fast, slow = ln.paces
    fast.ran("bulk", tokens([100]), 0.01)  # 0.1 ms per padded token: 250 tokens in 25 ms
    slow.ran("bulk", tokens([100]), 0.04)  # 0.4 ms per padded token: 62 tokens in 25 ms
    ln.ran("bulk")
    ln.enqueue("bulk", Request(size=40, future=None), tokens([10] * 40))
    assert len(await ln.next_batch(slow, "bulk")) == 6
    assert len(await ln.next_batch(fast, "bulk")) == 25
    # The gauge shows the smallest bulk batch a device may take.
    assert registry.get_sample_value("es_embed_batch_token_budget", {"lane": "bulk"}) == 62


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"devices": ["cuda:0"], "device": "cuda:1"},
            "model.devices: set together with model.device ('cuda:1'); give one",
        ),
        (
            {"devices": ["cuda:0", "cuda:1", "cuda"]},
            "model.devices[2]: 'cuda' is also devices[0]; one replica per GPU",
        ),
        (
            {"devices": ["cuda:0", "gpu1"]},
            "model.devices[1]: expected cpu, cuda or cuda:N (or auto alone), got 'gpu1'",
        ),
        ({"devices": ["auto", "cpu"]}, "model.devices: auto stands alone"),
        ({"devices": "cuda:0"}, "model.devices: expected a list, got str"),
    ],
)
def test_bad_devices_are_refused_naming_the_setting(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"model": model})
    assert str(err.value).startswith(message), str(err.value)


def test_the_reranker_follows_model_devices() -> None:
    with pytest.raises(ConfigError, match=r"^reranker\.device: 'cuda:0' with model\.devices"):
        settings_from_dict({"model": {"devices": ["cuda:0"]}, "reranker": {"device": "cuda:0"}})


def test_devices_from_the_file_or_the_environment() -> None:
    assert settings_from_dict({"model": {"devices": "auto"}}).model.devices == ("auto",)
    assert settings_from_dict({"model": {"devices": ["cpu", "cpu"]}}).model.devices == (
        "cpu",
        "cpu",
    )
    env = {"ES_EMBED_MODEL_DEVICES": "cuda:0, cuda:1"}
    assert settings_from_dict({}, env).model.devices == ("cuda:0", "cuda:1")
    assert settings_from_dict({}).model.devices == ()


@pytest.mark.parametrize(
    ("devices", "gpus", "resolved"),
    [
        (("auto",), 0, ["cpu"]),
        (("auto",), 2, ["cuda:0", "cuda:1"]),
        (("cpu", "cpu"), 0, ["cpu", "cpu"]),
        (("cuda:1", "cuda:0"), 2, ["cuda:1", "cuda:0"]),
        ((), 2, ["auto"]),  # model.device alone, resolved by the encoder as always
    ],
)
def test_devices_resolve_against_the_visible_gpus(
    monkeypatch: pytest.MonkeyPatch, devices: tuple[str, ...], gpus: int, resolved: list[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert resolve_devices(ModelSettings(devices=devices)) == resolved


def test_a_gpu_that_is_not_there_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError) as err:
        resolve_devices(ModelSettings(devices=("cuda:0", "cuda:2")))
    assert str(err.value) == (
        "model.devices[1]: 'cuda:2' requested but 2 CUDA device(s) are visible"
    )
