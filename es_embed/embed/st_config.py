"""What a model's authors declare about pooling, normalisation, prompts and limits.

Read from the sentence-transformers files a model directory ships (``modules.json``,
``1_Pooling/config.json``, ``config_sentence_transformers.json``,
``sentence_bert_config.json``). A model without them gets Qwen3's conventions (last token,
normalise) unless its architecture is a bidirectional encoder, where sentence-transformers
itself would mean-pool. Anything we cannot reproduce exactly (a Dense layer, max pooling,
prompts excluded from pooling) is refused at start-up rather than served subtly wrong.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from es_embed.config import ConfigError

log = logging.getLogger(__name__)

Pooling = Literal["lasttoken", "mean", "cls"]
POOLINGS: tuple[Pooling, ...] = ("lasttoken", "mean", "cls")
# sentence-transformers < 6 wrote one boolean per mode; 6 writes "pooling_mode".
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
# Bidirectional encoders: without sentence-transformers files, pool by mean (as
# sentence-transformers does for non-causal models), not by last token.
ENCODER_MODEL_TYPES = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "mpnet",
        "electra",
        "deberta",
        "deberta-v2",
        "modernbert",
        "nomic_bert",
        "camembert",
        "albert",
    }
)
MATRYOSHKA_KEYS = ("matryoshka_dims", "matryoshka_dimensions", "matryoshka_dim")


@dataclass(frozen=True)
class PoolingSpec:
    pooling: Pooling
    normalize: bool
    query_prompt: str | None
    max_seq_length: int | None  # sentence-transformers' own cut-off, if declared
    matryoshka_dims: tuple[int, ...] | None
    from_files: bool  # False: conventions chosen by default

    @property
    def padding_side(self) -> Literal["left", "right"]:
        # Left padding puts every input's last token in the last column (Qwen3's convention);
        # right padding keeps absolute position embeddings (BERT) where they were trained.
        return "left" if self.pooling == "lasttoken" else "right"


def read_pooling_spec(model_dir: Path | None, model_config: Any) -> PoolingSpec:
    """The pooling spec of a local model directory (``None``: no files could be read)."""
    model_type = getattr(model_config, "model_type", "")
    modules = read_json(model_dir, "modules.json") if model_dir else None
    st_config = read_json(model_dir, "config_sentence_transformers.json") if model_dir else None
    declared_dims = _matryoshka(st_config, model_config)
    query_prompt = _query_prompt(st_config)
    if modules is None:
        pooling: Pooling = "mean" if model_type in ENCODER_MODEL_TYPES else "lasttoken"
        log.info("no sentence-transformers modules.json: %s pooling, normalised", pooling)
        return PoolingSpec(pooling, True, query_prompt, None, declared_dims, from_files=False)
    assert model_dir is not None
    if not isinstance(modules, list):
        raise ConfigError(f"model.name: {model_dir / 'modules.json'} is not a list of modules")
    kinds = {}
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind not in SUPPORTED_MODULES:
            raise ConfigError(
                f"model.name: module {module.get('type')!r} in modules.json is not supported "
                f"(supported: {', '.join(SUPPORTED_MODULES)})"
            )
        kinds[kind] = module
    pooling = "lasttoken"
    if "Pooling" in kinds:
        pooling = _pooling_mode(model_dir / str(kinds["Pooling"].get("path", "1_Pooling")))
    bert_config = read_json(model_dir, "sentence_bert_config.json") or {}
    max_seq = bert_config.get("max_seq_length")
    return PoolingSpec(
        pooling=pooling,
        normalize="Normalize" in kinds,
        query_prompt=query_prompt,
        max_seq_length=int(max_seq) if isinstance(max_seq, int) and max_seq > 0 else None,
        matryoshka_dims=declared_dims,
        from_files=True,
    )


def _pooling_mode(path: Path) -> Pooling:
    config = read_json(path, "config.json")
    if config is None:
        raise ConfigError(f"model.name: the Pooling module has no {path / 'config.json'}")
    mode = config.get("pooling_mode")
    if mode is None:
        modes = [name for key, name in LEGACY_POOLING_KEYS.items() if config.get(key)]
        mode = modes if len(modes) != 1 else modes[0]
        if not modes:
            mode = "mean"  # sentence-transformers' default when no flag is set
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if mode not in POOLINGS:
        raise ConfigError(
            f"model.name: pooling {mode!r} in {path / 'config.json'} is not supported "
            f"(supported: {', '.join(POOLINGS)})"
        )
    if config.get("include_prompt", True) is False and mode != "lasttoken":
        raise ConfigError(
            f"model.name: {path / 'config.json'} excludes the prompt from pooling "
            "(include_prompt: false), which es-embed does not reproduce"
        )
    pooling: Pooling = mode
    return pooling


def _query_prompt(st_config: dict[str, Any] | None) -> str | None:
    prompts = (st_config or {}).get("prompts") or {}
    prompt = prompts.get("query") if isinstance(prompts, dict) else None
    return prompt if isinstance(prompt, str) and prompt else None


def _matryoshka(st_config: dict[str, Any] | None, model_config: Any) -> tuple[int, ...] | None:
    """Declared Matryoshka dimensions, if the model lists them (most do not: any 32..hidden)."""
    sources: list[Any] = [st_config or {}, getattr(model_config, "__dict__", {})]
    for source in sources:
        for key in MATRYOSHKA_KEYS:
            value = source.get(key)
            if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
                return tuple(sorted(set(value)))
    return None


def read_json(directory: Path | None, name: str, section: str = "model") -> Any:
    """A JSON file of the model directory; None when it has none."""
    if directory is None:
        return None
    path = directory / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{section}.name: cannot read {path}: {exc}") from None


def local_dir(name: str) -> Path | None:
    """The directory holding the model's files: a local path, or the hub cache's snapshot."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.json"]))
    except Exception as exc:  # no files means defaults; the model load itself reports why
        log.warning("cannot read sentence-transformers files of %s: %s", name, exc)
        return None
