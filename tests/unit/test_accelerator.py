"""Sizing batches from device memory, and placing weights as they load (no device needed)."""

from __future__ import annotations

import importlib.util
import threading
from types import SimpleNamespace

import pytest
import torch

from es_embed.embed import accelerator
from es_embed.embed.accelerator import activation_bytes_per_token, placement, token_budget

QWEN3_4B = SimpleNamespace(hidden_size=2560, intermediate_size=9728, num_attention_heads=32)


def test_activations_per_token_of_a_qwen3_4b_shape_in_bf16() -> None:
    # 8 hidden-wide rows + 4 intermediate-wide rows, 2 bytes each.
    assert activation_bytes_per_token(QWEN3_4B, 2) == 2 * (8 * 2560 + 4 * 9728)


def test_eager_attention_adds_its_scores() -> None:
    eager = SimpleNamespace(**vars(QWEN3_4B), _attn_implementation="eager")
    eager.max_position_embeddings = 512
    assert activation_bytes_per_token(eager, 2) == 2 * (8 * 2560 + 4 * 9728 + 32 * 512)


def test_a_configured_budget_is_used_on_any_device() -> None:
    assert token_budget(4096, torch.device("cpu"), QWEN3_4B, torch.float32) == (
        4096,
        "batching.max_batch_tokens",
    )


def test_cpu_budget_is_fixed() -> None:
    assert token_budget(0, torch.device("cpu"), QWEN3_4B, torch.float32) == (
        16384,
        "fixed on cpu",
    )


def test_cuda_budget_comes_from_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    free = 15 * 2**30  # a 24 GB card with 4B bf16 weights loaded
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 24 * 2**30))
    tokens, how = token_budget(0, torch.device("cuda", 0), QWEN3_4B, torch.bfloat16)
    assert tokens == int(free * 0.8 / (2 * (8 * 2560 + 4 * 9728)))
    assert tokens == 108_473
    assert how == "80% of 15.0 GiB free, 116 KiB of activations per token"


def test_weights_go_straight_to_cuda_only_with_accelerate(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str) -> object:
        return object() if name == "accelerate" else real(name)

    monkeypatch.setattr(accelerator.importlib.util, "find_spec", find_spec)
    assert placement(torch.device("cuda", 1)) == {
        "low_cpu_mem_usage": True,
        "device_map": {"": "cuda:1"},
    }
    assert placement(torch.device("cpu")) == {"low_cpu_mem_usage": True}
    monkeypatch.setattr(
        accelerator.importlib.util,
        "find_spec",
        lambda name: None if name == "accelerate" else real(name),
    )
    assert placement(torch.device("cuda", 0)) == {}


def test_memory_in_use_on_cpu_is_the_resident_set() -> None:
    assert accelerator.resident_bytes() > 10 * 2**20  # torch alone is more
    assert accelerator.memory_in_use(torch.device("cpu")).endswith("GiB resident")


class RecordedEvent:
    """Stands for torch.cuda.Event: what was recorded and waited for, in order."""

    log: list[str] = []
    made = 0

    def __init__(self) -> None:
        RecordedEvent.made += 1
        self.name = f"e{RecordedEvent.made}"

    def record(self, stream: str) -> None:
        self.log.append(f"record {self.name} on {stream}")

    def synchronize(self) -> None:
        self.log.append(f"wait {self.name}")


def test_the_host_stays_at_most_two_layers_ahead_of_the_gpu() -> None:
    RecordedEvent.log, RecordedEvent.made = [], 0
    keep_pace = accelerator.RunAhead(RecordedEvent, lambda: "cuda:1")
    for _ in range(4):  # four layer boundaries of one pass
        keep_pace()
    assert RecordedEvent.log == [
        "record e1 on cuda:1",  # the model's device, not the thread's current one
        "record e2 on cuda:1",
        "record e3 on cuda:1",
        "wait e1",  # before launching the third layer, the first is done
        "record e4 on cuda:1",
        "wait e2",
    ]
    # Each thread (each lane's passes) keeps its own count.
    RecordedEvent.log = []
    other = threading.Thread(target=keep_pace)
    other.start()
    other.join()
    assert RecordedEvent.log == ["record e5 on cuda:1"]


def test_only_a_cuda_device_limits_the_run_ahead() -> None:
    assert accelerator.run_ahead(torch.device("cpu")) is None
