"""Which devices the model runs on, and a replica of each model loaded on every one.

``model.devices`` (checked in ``config_checks.py``) lists them: ``auto`` is every visible
GPU, or the CPU on a machine without one; ``[cpu, cpu]`` is two replicas sharing the host
(how the tests run several devices); absent, ``model.device`` alone, as before. The reranker,
when one is configured, gets a replica on each of the same devices, so every device can take
any batch.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from es_embed.config import ConfigError, ModelSettings, Settings
from es_embed.embed.encoder import HFEncoder, load_encoder
from es_embed.embed.rerank import AnyReranker, load_reranker

log = logging.getLogger(__name__)


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_devices(model: ModelSettings) -> list[str]:
    """The device of each replica, in order: ``model.devices`` with ``auto`` expanded and
    every CUDA index checked against the GPUs this process sees; else ``[model.device]``."""
    if not model.devices:
        return [model.device]  # load_encoder resolves it, as it always has
    gpus = visible_gpus()
    if model.devices == ("auto",):
        return [f"cuda:{i}" for i in range(gpus)] or ["cpu"]
    for i, device in enumerate(model.devices):
        kind, _, index = device.partition(":")
        if kind == "cuda" and int(index or 0) >= gpus:
            seen = f"{gpus} CUDA device(s) are visible" if gpus else "CUDA is not available"
            raise ConfigError(f"model.devices[{i}]: {device!r} requested but {seen}")
    return list(model.devices)


def load_replicas(
    settings: Settings, with_reranker: bool
) -> tuple[list[HFEncoder], list[AnyReranker | None]]:
    """One encoder (and, ``with_reranker``, one reranker) per device, in device order."""
    devices = resolve_devices(settings.model)
    encoders: list[HFEncoder] = []
    rerankers: list[AnyReranker | None] = []
    # One device after the other: loading with accelerate patches torch's module globals,
    # which two loads in parallel threads would trip over.
    for device in devices:
        encoders.append(load_encoder(replace(settings.model, device=device, devices=())))
        reranker = replace(settings.reranker, device=device)
        rerankers.append(load_reranker(reranker) if with_reranker else None)
    if len(devices) > 1:
        log.info("loaded a replica of the models on each of %s", ", ".join(devices))
    return encoders, rerankers
