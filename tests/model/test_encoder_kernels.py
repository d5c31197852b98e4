"""The GPU-path choices of the encoder (issue 13) leave its vectors unchanged: the sdpa
attention kernel it picks first against eager attention, the fallback when a model lacks
sdpa, and the one-copy result path (finiteness checked on the host copy), on the tiny Qwen3
in float32 on the CPU to 1e-5. The pinned, non-blocking copy to CUDA is checked on a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel

from es_embed.config import ModelSettings
from es_embed.embed import accelerator
from es_embed.embed import encoder as encoder_module
from es_embed.embed.encoder import HFEncoder, load_encoder
from tests.model.helpers import encode

# Mixed lengths, so the batch is left-padded and the attention mask matters.
TEXTS = [
    "What causes the seasons on Earth?",
    "x",
    "Vaccines train the immune system to recognise a virus, " * 6,
    "The quick brown fox jumps over the lazy dog.",
]


def attention_of(encoder: HFEncoder) -> str:
    return str(encoder._model.config._attn_implementation)


def load_with(tiny_qwen_dir: Path, monkeypatch: pytest.MonkeyPatch, kernels: list[str]) -> Any:
    with monkeypatch.context() as m:
        m.setattr(accelerator, "attention_choices", lambda device, dtype: kernels)
        return load_encoder(ModelSettings(name=str(tiny_qwen_dir), device="cpu"))


def test_sdpa_is_picked_and_gives_the_vectors_of_eager_attention(
    tiny_qwen_dir: Path, tiny_qwen_encoder: HFEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert accelerator.attention_choices(torch.device("cpu"), torch.float32)[0] == "sdpa"
    assert attention_of(tiny_qwen_encoder) == "sdpa"
    eager = load_with(tiny_qwen_dir, monkeypatch, ["eager"])
    assert attention_of(eager) == "eager"
    fast, slow = encode(tiny_qwen_encoder, TEXTS), encode(eager, TEXTS)
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    # Batched (padded) equals one at a time under sdpa too: the mask reaches the kernel.
    alone = np.concatenate([encode(tiny_qwen_encoder, [t]) for t in TEXTS])
    np.testing.assert_allclose(fast, alone, atol=1e-5)


def test_a_model_without_sdpa_falls_back_to_eager(
    tiny_qwen_dir: Path, tiny_qwen_encoder: HFEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = AutoModel.from_pretrained
    tried: list[str] = []

    def no_sdpa(*args: Any, attn_implementation: str, **kwargs: Any) -> Any:
        tried.append(attn_implementation)
        if attn_implementation == "sdpa":  # what transformers raises for such a model
            raise ValueError("Qwen3Model does not support an attention implementation through "
                             "torch.nn.functional.scaled_dot_product_attention yet.")  # fmt: skip
        return real(*args, attn_implementation=attn_implementation, **kwargs)

    monkeypatch.setattr(AutoModel, "from_pretrained", no_sdpa)
    fallback = load_encoder(ModelSettings(name=str(tiny_qwen_dir), device="cpu"))
    assert tried == ["sdpa", "eager"] and attention_of(fallback) == "eager"
    np.testing.assert_allclose(encode(fallback, TEXTS), encode(tiny_qwen_encoder, TEXTS), atol=1e-5)


def test_the_result_is_copied_once_and_checked_on_the_host(
    tiny_qwen_encoder: HFEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch.isfinite on the device would be a second host sync per pass on a GPU.
    calls: list[int] = []
    real = torch.isfinite

    def counted(tensor: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return real(tensor)

    monkeypatch.setattr(encoder_module.torch, "isfinite", counted)
    vectors = encode(tiny_qwen_encoder, TEXTS)
    assert calls == [] and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pinned_non_blocking_copies_give_the_vectors_of_the_cpu(
    tiny_qwen_dir: Path, tiny_qwen_encoder: HFEncoder
) -> None:
    cuda = load_encoder(ModelSettings(name=str(tiny_qwen_dir), device="cuda", dtype="float32"))
    for _ in range(3):  # reused pinned blocks must never hand a later batch an earlier one's ids
        np.testing.assert_allclose(encode(cuda, TEXTS), encode(tiny_qwen_encoder, TEXTS), atol=1e-4)
        np.testing.assert_allclose(
            encode(cuda, TEXTS[::-1]), encode(tiny_qwen_encoder, TEXTS[::-1]), atol=1e-4
        )
