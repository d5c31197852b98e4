"""What an index needs to know of a model without loading it: its width and whether it
was trained for Matryoshka truncation.

``setup`` reads it from the model's config files (no weights); the follower, the loader
and search take it from the loaded encoder (``ModelInfo.shape``). Both go through
``supports_matryoshka``, so one rule decides which index dims a model may serve.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from es_embed.config import ConfigError, ModelSettings

# Families trained with a Matryoshka loss whose files do not say so. Qwen3-Embedding
# (every size) is listed by model_type: its checkpoints are plain Qwen3 configs.
MATRYOSHKA_MODEL_TYPES = frozenset({"qwen3"})
MATRYOSHKA_NAMES = (
    "qwen3-embedding",
    "nomic-embed-text-v1.5",
    "nomic-embed-text-v2",
    "mxbai-embed-large",
    "jina-embeddings-v3",
    "snowflake-arctic-embed-m-v1.5",
    "snowflake-arctic-embed-l-v2",
    "text-embedding-3",
)


@dataclass(frozen=True)
class ModelShape:
    model_id: str  # the served id, part of every content hash
    hidden_size: int  # full output width
    matryoshka: bool  # may vectors be truncated below hidden_size
    matryoshka_dims: tuple[int, ...] | None = None  # the only valid widths, when declared
    max_length: int | None = None  # tokens per input; None when read without the tokenizer


def supports_matryoshka(
    model: ModelSettings, model_type: str, declared: tuple[int, ...] | None
) -> bool:
    if model.matryoshka != "auto":
        return model.matryoshka == "yes"
    name = model.name.lower()
    return (
        bool(declared)
        or model_type in MATRYOSHKA_MODEL_TYPES
        or any(family in name for family in MATRYOSHKA_NAMES)
    )


@functools.cache
def read_model_shape(model: ModelSettings) -> ModelShape:
    """The shape from the model's config files (downloads no weights)."""
    from transformers import AutoConfig  # heavy: only when a command needs it

    from es_embed.embed.st_config import local_dir, read_pooling_spec

    try:
        config = AutoConfig.from_pretrained(model.name, trust_remote_code=model.trust_remote_code)
    except Exception as exc:
        raise ConfigError(
            f"model.name: cannot read the config of {model.name!r} to learn its dimension "
            f"({exc}); check the name, or download the model first"
        ) from None
    hidden = _width(config)
    if hidden is None:
        raise ConfigError(f"model.name: {model.name!r} has no hidden_size in its config")
    declared = read_pooling_spec(local_dir(model.name), config).matryoshka_dims
    model_type = str(getattr(config, "model_type", ""))
    return ModelShape(
        model.model_id, hidden, supports_matryoshka(model, model_type, declared), declared
    )


def _width(config: Any) -> int | None:
    for attr in ("hidden_size", "d_model", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
