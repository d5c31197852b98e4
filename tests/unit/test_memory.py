"""Out of memory degrades: the predicate, splitting a batch in halves, the token budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from es_embed.embed.batching import Item, Request
from es_embed.embed.memory import (
    RECOVERY_PASSES,
    TokenBudget,
    forward_in_parts,
    is_out_of_memory,
    too_large_for_memory,
)
from es_embed.embed.protocol import Tokenized
from es_embed.errors import ErrorKind
from tests.fakes import FakeEncoder, OutOfMemoryEncoder


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"),
        torch.OutOfMemoryError("whatever the message"),
        RuntimeError("CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 23.65 GiB total)"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other: 1.2 GB)"),
        RuntimeError("HIP out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory"),
        MemoryError(),
    ],
)
def test_allocation_failures_are_out_of_memory(exc: BaseException) -> None:
    assert is_out_of_memory(exc)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("CUDA error: device-side assert triggered"),
        FloatingPointError("the model returned non-finite or mis-shaped vectors"),
        ValueError("out of memory"),  # not an error torch raises for an allocation
    ],
)
def test_real_faults_are_not_out_of_memory(exc: BaseException) -> None:
    assert not is_out_of_memory(exc)


def tokens(lengths: list[int]) -> list[Tokenized]:
    return [Tokenized(tuple(range(2, 2 + n)), n) for n in lengths]


def test_a_batch_of_64_is_split_until_16_fit() -> None:
    enc = OutOfMemoryEncoder(most_inputs=16)
    batch = enc.tokenize([f"document number {i}" for i in range(64)])  # 4 tokens each
    parts = forward_in_parts(enc.forward, batch)
    # 64 fails, 32 fails, 16 + 16 run; the second 32 is split untried (32 already failed).
    assert enc.attempts == [64, 32, 16, 16, 16, 16]
    assert parts.splits == 3 and parts.failed_tokens == 32 * 4
    expected = FakeEncoder().forward(batch)
    np.testing.assert_array_equal(np.stack(parts.rows), expected)  # type: ignore[arg-type]


def test_an_input_too_large_alone_is_none_and_the_rest_is_answered() -> None:
    enc = OutOfMemoryEncoder(most_inputs=64, most_tokens=100)
    batch = tokens([10, 10, 200, 10])
    parts = forward_in_parts(enc.forward, batch)
    assert parts.rows[2] is None
    assert [r is not None for r in parts.rows] == [True, True, False, True]
    for i in (0, 1, 3):
        np.testing.assert_array_equal(parts.rows[i], FakeEncoder().forward([batch[i]])[0])
    # 800 fails; [10, 10] runs; [200, 10] (400 padded) fails; 200 alone fails; 10 runs.
    assert enc.attempts == [4, 2, 2, 1, 1]
    assert parts.splits == 2 and parts.failed_tokens == 200


def test_a_batch_that_fits_runs_once() -> None:
    enc = OutOfMemoryEncoder(most_inputs=16)
    parts = forward_in_parts(enc.forward, tokens([3] * 16))
    assert enc.attempts == [16] and parts.splits == 0 and parts.failed_tokens is None


def test_a_real_fault_is_not_split() -> None:
    enc = FakeEncoder()
    enc.failure = RuntimeError("CUDA error: an illegal memory access was encountered")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        forward_in_parts(enc.forward, tokens([3] * 8))
    assert enc.forward_calls == 0


def test_budget_halves_below_the_pass_that_failed_then_recovers_gradually() -> None:
    budget = TokenBudget(16384)
    budget.out_of_memory(4096)
    assert budget.current == 2048
    budget.out_of_memory(10_000)  # a larger failing pass never raises it (nor lowers it)
    assert budget.current == 2048
    budget.out_of_memory(2048)
    assert budget.current == 1024
    for _ in range(RECOVERY_PASSES - 1):
        budget.fitted()
    assert budget.current == 1024
    budget.fitted()
    assert budget.current == 1280  # a quarter more after RECOVERY_PASSES passes in a row
    budget.out_of_memory(1280)  # a failure resets the count
    for _ in range(RECOVERY_PASSES - 1):
        budget.fitted()
    assert budget.current == 640
    for _ in range(100 * RECOVERY_PASSES):
        budget.fitted()
    assert budget.current == 16384  # never past the ceiling


def test_an_input_too_large_alone_lowers_the_budget_once_however_often_it_is_retried() -> None:
    budget = TokenBudget(16384)
    enc = OutOfMemoryEncoder(most_inputs=64, most_tokens=100)
    for _ in range(5):  # as the follower retries it: in a page, alone, on every page read
        parts = forward_in_parts(enc.forward, tokens([10, 200, 10]))
        assert parts.rows[1] is None and parts.failed_tokens == 200
        budget.out_of_memory(parts.failed_tokens)
        assert budget.current == 100  # halved below the 200 that failed, once
    budget.out_of_memory(100)  # a batch within the budget that fails still halves it
    assert budget.current == 50


def test_too_large_names_the_input_and_its_tokens() -> None:
    item = Item(Request(size=3, future=None), 2, tokens([5000])[0], seq=7)
    err = too_large_for_memory(item, "cuda:0")
    assert err.kind is ErrorKind.TOO_LARGE and err.code == "input_too_large_for_memory"
    assert err.param == "input[2]" and "5000 tokens" in err.message and "cuda:0" in err.message
