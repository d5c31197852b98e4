"""A bulk pass of a real model stands aside for a query between its layers (``turns.py``):
the encoder's hooks sit before each transformer layer (MiniLM's six, the tiny Qwen3's two),
and a pass paused mid-way while a query ran gives the vectors it gives alone."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from es_embed.config import BatchSettings, ModelSettings
from es_embed.embed.encoder import load_encoder, transformer_layers
from es_embed.embed.service import EmbeddingService
from es_embed.metrics import Registry

DOCS = [
    f"document {i}: " + "a sentence about vaccines and the seasons. " * (2 + i) for i in range(6)
]


@pytest.mark.parametrize(("fixture", "layers"), [("minilm_dir", 6), ("tiny_qwen_dir", 2)])
def test_the_hooks_sit_before_every_transformer_layer(
    fixture: str, layers: int, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(fixture)
    encoder = load_encoder(ModelSettings(name=str(path), device="cpu"))
    calls: list[str] = []
    assert encoder.on_layer(lambda: calls.append(threading.current_thread().name)) == layers
    encoder.forward(encoder.tokenize(DOCS[:2]))
    assert len(calls) == layers  # once per layer per pass


def test_a_list_inside_a_layer_is_not_the_stack_of_layers() -> None:
    class Layer(torch.nn.Module):  # a mixture of experts: more experts than layers
        def __init__(self) -> None:
            super().__init__()
            self.experts = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(8))

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList(Layer() for _ in range(3))

    model = Model()
    assert transformer_layers(model) == list(model.layers)
    assert transformer_layers(torch.nn.Linear(2, 2)) == []


@pytest.mark.timeout(120)
async def test_a_real_bulk_pass_pauses_for_a_query_and_its_vectors_are_unchanged(
    minilm_dir: Path,
) -> None:
    encoder = load_encoder(ModelSettings(name=str(minilm_dir), device="cpu"))
    expected = encoder.forward(encoder.tokenize(DOCS))
    entered = threading.Event()

    def slow_bulk_layers() -> None:
        # Each bulk layer made 50 ms longer: the pass lasts long enough for the query to
        # arrive mid-way whatever the machine's load; queries and this test run at speed.
        if "bulk" in threading.current_thread().name:
            entered.set()
            time.sleep(0.05)

    encoder.on_layer(slow_bulk_layers)  # before the service's own hook
    registry = Registry()
    batching = BatchSettings(max_bulk_batch_ms=0)  # the six documents in one pass
    svc = EmbeddingService(encoder, batching, ModelSettings(name="minilm"), registry=registry)
    await svc.start()
    try:
        bulk = asyncio.create_task(svc.embed(DOCS))
        assert await asyncio.to_thread(entered.wait, 30)
        query = await svc.embed(["what causes the seasons?"], input_type="query")
        answered_first = not bulk.done()
        embedded = (await bulk).vectors
    finally:
        await svc.stop()
    assert answered_first
    assert registry.get_sample_value("es_embed_bulk_pauses_total", {"device": "cpu"}) == 1
    np.testing.assert_allclose(embedded, expected, atol=1e-5)
    alone = encoder.forward(encoder.tokenize(["what causes the seasons?"]))
    np.testing.assert_allclose(query.vectors, alone, atol=1e-5)
