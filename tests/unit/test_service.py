"""EmbeddingService with the fake encoder: lanes, admission, cancellation, failure, dims."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from es_embed.config import BatchSettings, ModelSettings
from es_embed.embed.service import EmbeddingService, format_query, truncate_and_normalize
from es_embed.errors import EmbedError, ErrorKind
from tests.fakes import FakeEncoder, GatedEncoder


async def started(encoder: FakeEncoder, **batching: object) -> EmbeddingService:
    svc = EmbeddingService(encoder, BatchSettings(**batching), ModelSettings(name="fake"))  # type: ignore[arg-type]
    await svc.start()
    return svc


def test_instruction_string_is_byte_exact() -> None:
    assert format_query("Find it", "what is x") == "Instruct: Find it\nQuery:what is x"


def test_truncate_then_normalise() -> None:
    v = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    out = truncate_and_normalize(v, 2)
    assert out.shape == (1, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8]], atol=1e-6)


async def test_vectors_have_requested_dims_and_unit_norm() -> None:
    svc = await started(FakeEncoder(hidden_size=64))
    try:
        out = await svc.embed(["alpha beta", "gamma"], dims=32)
        assert out.vectors.shape == (2, 32)
        np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
        full = await svc.embed(["alpha beta"])
        # the 32-dim vector is the renormalised prefix of the full one
        prefix = full.vectors[0, :32] / np.linalg.norm(full.vectors[0, :32])
        np.testing.assert_allclose(out.vectors[0], prefix, atol=1e-5)
    finally:
        await svc.stop()


@pytest.mark.parametrize("dims", [0, 31, 65, -1])
async def test_dims_out_of_range_names_the_range(dims: int) -> None:
    svc = await started(FakeEncoder(hidden_size=64))
    try:
        with pytest.raises(EmbedError) as err:
            await svc.embed(["x"], dims=dims)
        assert err.value.kind is ErrorKind.INVALID_REQUEST
        assert "between 32 and 64" in err.value.message and err.value.param == "dimensions"
    finally:
        await svc.stop()


async def test_query_lane_goes_before_queued_bulk_work() -> None:
    enc = GatedEncoder()
    svc = await started(enc, max_batch_size=2)
    try:
        bulk = asyncio.create_task(svc.embed([f"doc {i}" for i in range(8)]))
        await asyncio.to_thread(enc.entered.wait, 5)  # first bulk batch is in flight
        query = asyncio.create_task(svc.embed(["a b c d e f g h i j k"], input_type="query"))
        await asyncio.sleep(0.05)
        enc.gate.set()
        await asyncio.gather(bulk, query)
        lengths = [len(b) for b in enc.seen]
        # batch 1: bulk in flight; batch 2: the lone query, ahead of the 6 queued documents
        assert lengths[0] == 2 and lengths[1] == 1
        assert enc.seen[1][0] > 3  # the query (instruction-free fake: 11 words + end token)
    finally:
        enc.gate.set()
        await svc.stop()


class RecordingEncoder(FakeEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[int]] = []

    def forward(self, batch):  # type: ignore[no-untyped-def]
        self.seen.append([len(t.ids) for t in batch])
        return super().forward(batch)


async def test_bulk_work_waits_briefly_for_the_next_query() -> None:
    enc = RecordingEncoder()
    svc = await started(enc, query_anticipation_ms=300)
    try:
        await svc.embed(["first query"], input_type="query")
        bulk = asyncio.create_task(svc.embed(["one two three four five six"]))
        await asyncio.sleep(0.1)  # inside the hold: the bulk document has not run
        assert enc.seen == [[3]]
        await svc.embed(["next"], input_type="query")
        await bulk
        assert enc.seen == [[3], [2], [7]]  # the follow-up query went before the bulk work
    finally:
        await svc.stop()


async def test_bulk_work_runs_when_the_hold_expires() -> None:
    enc = RecordingEncoder()
    svc = await started(enc, query_anticipation_ms=20)
    try:
        await svc.embed(["first query"], input_type="query")
        await asyncio.wait_for(svc.embed(["a b c"]), 2)
        assert enc.seen == [[3], [4]]
    finally:
        await svc.stop()


async def test_a_query_stream_cannot_hold_bulk_work_forever() -> None:
    enc = RecordingEncoder()
    svc = await started(enc, query_anticipation_ms=10_000, bulk_max_hold_ms=100)
    try:
        await svc.embed(["first query"], input_type="query")
        # Without the cap this would wait the full 10 s anticipation.
        await asyncio.wait_for(svc.embed(["a b c"]), 2)
        assert enc.seen[-1] == [4]
    finally:
        await svc.stop()


async def test_spaced_queries_do_not_hold_bulk_work() -> None:
    enc = RecordingEncoder()
    svc = await started(enc, query_anticipation_ms=1500, bulk_max_hold_ms=10_000)
    try:
        await svc.embed(["first query"], input_type="query")
        await asyncio.sleep(1.6)  # the next query comes long after the answer
        await svc.embed(["second query"], input_type="query")
        # A hold would keep this document back 1.5 s; a client that does not send its next
        # query at once gets none, so bulk work goes at once.
        await asyncio.wait_for(svc.embed(["a b c"]), 1.0)
        assert enc.seen == [[3], [3], [4]]
    finally:
        await svc.stop()


async def test_full_lane_answers_429_with_retry_after() -> None:
    enc = GatedEncoder()
    svc = await started(enc, max_batch_size=1, bulk_queue=4, retry_after_seconds=3)
    try:
        first = asyncio.create_task(svc.embed(["one"]))
        await asyncio.to_thread(enc.entered.wait, 5)
        second = asyncio.create_task(svc.embed(["a", "b", "c"]))
        await asyncio.sleep(0.05)
        with pytest.raises(EmbedError) as err:
            await svc.embed(["d", "e"])
        assert err.value.kind is ErrorKind.OVERLOADED and err.value.retry_after == 3
        enc.gate.set()
        await asyncio.gather(first, second)
    finally:
        enc.gate.set()
        await svc.stop()


async def test_cancelled_request_never_reaches_the_model() -> None:
    enc = GatedEncoder()
    svc = await started(enc, max_batch_size=1)
    try:
        first = asyncio.create_task(svc.embed(["in flight"]))
        await asyncio.to_thread(enc.entered.wait, 5)
        doomed = asyncio.create_task(svc.embed(["never embedded please"]))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await asyncio.sleep(0.01)
        enc.gate.set()
        await first
        await asyncio.sleep(0.05)
        assert enc.encoded_inputs == 1
    finally:
        enc.gate.set()
        await svc.stop()


async def test_model_failure_fails_waiters_then_recovers() -> None:
    enc = FakeEncoder()
    svc = await started(enc, probe_interval_seconds=0.05)
    try:
        enc.failure = RuntimeError("CUDA error: device lost")
        with pytest.raises(EmbedError) as err:
            await svc.embed(["x"])
        assert err.value.kind is ErrorKind.UNAVAILABLE
        ok, reason = svc.health()
        assert not ok and reason and "device lost" in reason
        with pytest.raises(EmbedError):  # refused at once while unhealthy
            await svc.embed(["y"])
        enc.failure = None
        for _ in range(100):
            if svc.health()[0]:
                break
            await asyncio.sleep(0.02)
        assert svc.health() == (True, None)
        assert (await svc.embed(["z"])).vectors.shape == (1, 64)
    finally:
        await svc.stop()


async def test_empty_text_names_its_index() -> None:
    svc = await started(FakeEncoder())
    try:
        with pytest.raises(EmbedError) as err:
            await svc.embed(["fine", ""])
        assert err.value.param == "input[1]"
    finally:
        await svc.stop()


async def test_truncation_policy_error_names_input_and_tokens() -> None:
    enc = FakeEncoder(max_length=4)
    svc = EmbeddingService(enc, BatchSettings(), ModelSettings(name="f", truncation="error"))
    await svc.start()
    try:
        with pytest.raises(EmbedError) as err:
            await svc.embed(["short", "one two three four five"])
        assert err.value.param == "input[1]" and "6 tokens" in err.value.message
    finally:
        await svc.stop()


async def test_truncation_counted_by_default() -> None:
    svc = await started(FakeEncoder(max_length=4))
    try:
        out = await svc.embed(["short", "one two three four five"])
        assert out.truncated == 1 and out.prompt_tokens == 2 + 4
    finally:
        await svc.stop()


async def test_mixed_batch_matches_one_at_a_time() -> None:
    svc = await started(FakeEncoder(), max_batch_size=64)
    try:
        texts = ["a", "b c d e f", "g h", "i j k l m n o p q r"]
        together = (await svc.embed(texts)).vectors
        alone = np.stack([(await svc.embed([t])).vectors[0] for t in texts])
        np.testing.assert_allclose(together, alone, atol=1e-6)
    finally:
        await svc.stop()
