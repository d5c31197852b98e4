"""The bench's vector memo: the model runs once per distinct input, across runs; and the
passage benchmark still imports (it is not run by any test, so a moved helper broke it once)."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from bench import vector_memo
from bench.vector_memo import MemoEncoder
from tests.fakes import FakeEncoder


def test_each_distinct_input_reaches_the_model_once_and_later_runs_skip_it(
    tmp_path: Path,
) -> None:
    fake = FakeEncoder(hidden_size=8)
    memo = MemoEncoder(fake, tmp_path)
    first = memo.forward(memo.tokenize(["red apples", "green pears"]))
    again = memo.forward(memo.tokenize(["green pears", "blue plums", "red apples"]))
    assert fake.encoded_inputs == 3  # "blue plums" is the only new input
    assert np.array_equal(again[0], first[1]) and np.array_equal(again[2], first[0])
    assert np.allclose(again[1], fake.forward(fake.tokenize(["blue plums"]))[0])
    memo.flush()

    other = FakeEncoder(hidden_size=8)
    reloaded = MemoEncoder(other, tmp_path)
    out = reloaded.forward(reloaded.tokenize(["blue plums", "red apples"]))
    assert other.encoded_inputs == 0 and (reloaded.hits, reloaded.misses) == (2, 0)
    assert np.array_equal(out, again[[1, 2]])
    # Another model (or dimension) never reads these vectors.
    wider = FakeEncoder(hidden_size=16)
    MemoEncoder(wider, tmp_path).forward(wider.tokenize(["red apples"]))
    assert wider.encoded_inputs == 1


def test_vectors_are_written_as_they_accumulate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_memo, "FLUSH_EVERY", 2)
    fake = FakeEncoder(hidden_size=8)
    memo = MemoEncoder(fake, tmp_path)
    memo.remember([t.ids for t in fake.tokenize(["a b", "c d", "e f"])], np.ones((3, 8)))
    # Two written without a flush (a killed run keeps them); the third waits for one.
    assert len(MemoEncoder(FakeEncoder(hidden_size=8), tmp_path)._known) == 2
    memo.flush()
    fresh = FakeEncoder(hidden_size=8)
    out = MemoEncoder(fresh, tmp_path).forward(fresh.tokenize(["e f"]))
    assert fresh.encoded_inputs == 0 and np.array_equal(out, np.ones((1, 8), np.float32))


def test_the_passage_benchmark_imports() -> None:
    bench = importlib.import_module("bench.passages")
    assert [v.label for v in bench.variants(128, 32)][:3] == [
        "window 128",
        "passages 128/32",
        "window 256",
    ]
