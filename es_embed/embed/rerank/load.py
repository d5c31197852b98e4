"""Loading a reranker: its family from the model's config, its limits and files, a self-check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer

from es_embed.config import ConfigError, ModelSettings, RerankerSettings
from es_embed.embed.encoder import (
    NonFiniteOutputError,
    dtype_name,
    load_config_and_tokenizer,
    load_pretrained,
    private_tokenizer,
    resolve_device,
    resolve_dtype,
    token_limit,
    tokenizer_specials,
)
from es_embed.embed.protocol import RerankerFamily, RerankerInfo
from es_embed.embed.rerank.families import (
    ACTIVATIONS,
    QWEN3_ARCHITECTURE,
    QWEN3_PREFIX,
    QWEN3_SUFFIX,
    SECTION,
    Activation,
    AnyReranker,
    CrossEncoderReranker,
    Qwen3Reranker,
)
from es_embed.embed.st_config import local_dir, read_json

log = logging.getLogger(__name__)

PROBE = ("es-embed start-up probe", "is every score finite?")


def detect_family(config: Any, name: str) -> RerankerFamily:
    """Qwen3-Reranker or a cross-encoder, from the architectures the model's config names."""
    architectures = list(getattr(config, "architectures", None) or [])
    if QWEN3_ARCHITECTURE in architectures:
        return "qwen3"
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "cross-encoder"
    found = ", ".join(architectures) or "no architectures"
    raise ConfigError(
        f"{SECTION}.name: {name!r} is {found}; supported rerankers: Qwen3-Reranker "
        f"({QWEN3_ARCHITECTURE}) and sentence-transformers CrossEncoder models "
        "(*ForSequenceClassification)"
    )


@dataclass(frozen=True)
class Parts:
    """What both families load the same way, before their own parts."""

    settings: RerankerSettings
    name: str
    config: Any
    hf_tokenizer: Any
    tokenizer: Tokenizer  # the private Rust copy (tokenisation off the model thread)
    device: torch.device
    dtype: torch.dtype

    def info(self, family: RerankerFamily, max_length: int) -> RerankerInfo:
        # Served as the embedding model is: a hub id as it is, a local directory by its name.
        served = ModelSettings(name=self.name).model_id
        return RerankerInfo(served, family, max_length, str(self.device), dtype_name(self.dtype))

    def weights(self, auto_class: Any) -> Any:
        return load_pretrained(
            auto_class, self.name, self.config, self.device, self.dtype, section=SECTION
        )


def load_reranker(settings: RerankerSettings) -> AnyReranker:
    """Load the configured reranker, detect its family, and self-check it."""
    name = settings.name
    if not name:
        raise ConfigError(f"{SECTION}.name: no reranker is configured")
    device = resolve_device(settings.device, SECTION)
    dtype = resolve_dtype(settings.dtype, device, SECTION)
    config, hf_tokenizer = load_config_and_tokenizer(name, section=SECTION)
    family = detect_family(config, name)
    parts = Parts(
        settings, name, config, hf_tokenizer, private_tokenizer(hf_tokenizer), device, dtype
    )
    reranker = _load_qwen3(parts) if family == "qwen3" else _load_cross_encoder(parts)
    log.info(
        "reranker %s: %s family, max %d tokens per pair, %s on %s",
        reranker.info.model_id,
        family,
        reranker.info.max_length,
        reranker.info.dtype,
        reranker.info.device,
    )
    return _self_check(reranker, settings)


def _load_qwen3(parts: Parts) -> Qwen3Reranker:
    from transformers import AutoModelForCausalLM

    name, tokenizer, config = parts.name, parts.tokenizer, parts.config
    yes, no = tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")
    if yes is None or no is None:
        raise ConfigError(
            f"{SECTION}.name: {name!r} has no 'yes'/'no' tokens to read its answer from; "
            "is it a Qwen3-Reranker?"
        )
    opening, closing = tokenizer_specials(tokenizer, name, SECTION)
    head = [*tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False).ids, *opening]
    tail = [*closing, *tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False).ids]
    fixed = len(head) + len(tail)
    max_length = token_limit(
        parts.settings.max_length, config, parts.hf_tokenizer, None, fixed, SECTION
    )
    if hasattr(config, "use_cache"):
        config.use_cache = False  # one forward pass per pair: a KV cache only costs memory
    pad_id = parts.hf_tokenizer.pad_token_id
    return Qwen3Reranker(
        parts.weights(AutoModelForCausalLM),
        tokenizer,
        parts.info("qwen3", max_length),
        instruction=parts.settings.instruction,
        head=head,
        tail=tail,
        answer_ids=(no, yes),
        pad_id=pad_id if pad_id is not None else no,  # masked out anyway
    )


def _load_cross_encoder(parts: Parts) -> CrossEncoderReranker:
    from transformers import AutoModelForSequenceClassification

    name, config, hf_tokenizer = parts.name, parts.config, parts.hf_tokenizer
    if getattr(config, "num_labels", 1) != 1:
        raise ConfigError(
            f"{SECTION}.name: {name!r} has {config.num_labels} labels; a reranker needs one "
            "relevance score per pair (num_labels: 1)"
        )
    directory = local_dir(name)
    files = _cross_encoder_files(directory)
    declared = files.get("max_seq_length")
    max_length = token_limit(
        parts.settings.max_length,
        config,
        hf_tokenizer,
        declared if isinstance(declared, int) and declared > 0 else None,
        hf_tokenizer.num_special_tokens_to_add(pair=True),
        SECTION,
    )
    return CrossEncoderReranker(
        parts.weights(AutoModelForSequenceClassification),
        parts.tokenizer,
        parts.info("cross-encoder", max_length),
        activation=_activation(files.get("activation_fn"), config, name),
        pad_id=hf_tokenizer.pad_token_id or 0,
        pad_type_id=int(getattr(hf_tokenizer, "pad_token_type_id", 0) or 0),
        pass_type_ids="token_type_ids" in getattr(hf_tokenizer, "model_input_names", ()),
    )


def _cross_encoder_files(directory: Any) -> dict[str, Any]:
    """What the sentence-transformers files declare (activation, length), refusing what
    CrossEncoder.predict would compute and es-embed would not (extra modules, prompts)."""
    modules = read_json(directory, "modules.json", SECTION) or []
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind != "Transformer":
            raise ConfigError(
                f"{SECTION}.name: module {module.get('type')!r} in modules.json is not supported "
                "for a cross-encoder (only Transformer)"
            )
    st_config = read_json(directory, "config_sentence_transformers.json", SECTION) or {}
    if st_config.get("default_prompt_name"):
        raise ConfigError(
            f"{SECTION}.name: the model declares a default prompt "
            f"({st_config['default_prompt_name']!r}), which es-embed does not reproduce"
        )
    bert_config = read_json(directory, "sentence_bert_config.json", SECTION) or {}
    return {
        "activation_fn": st_config.get("activation_fn"),
        "max_seq_length": bert_config.get("max_seq_length"),
    }


def _activation(declared: Any, config: Any, name: str) -> Activation:
    """The activation CrossEncoder.predict applies, found where CrossEncoder looks for it:
    config_sentence_transformers.json (v6), config.json's ``sentence_transformers`` (v4-5),
    the pre-v4 key; else sigmoid for one label."""
    path = declared
    if path is None:
        path = (getattr(config, "sentence_transformers", None) or {}).get("activation_fn")
    if path is None:
        path = getattr(config, "sbert_ce_default_activation_function", None)
    if path is not None and not str(path).startswith("torch."):
        # CrossEncoder without trust_remote_code ignores code outside torch, and so do we.
        log.warning("%s: activation %s is not from torch; using sigmoid", name, path)
        path = None
    if path is None:
        return torch.sigmoid
    kind = str(path).rsplit(".", 1)[-1]
    if kind not in ACTIVATIONS:
        raise ConfigError(
            f"{SECTION}.name: activation {path!r} is not supported "
            f"(supported: {', '.join(ACTIVATIONS)})"
        )
    return ACTIVATIONS[kind]


def _self_check(reranker: AnyReranker, settings: RerankerSettings) -> AnyReranker:
    try:
        reranker.forward(reranker.tokenize_pairs(*PROBE[:1], PROBE[1:]))
    except NonFiniteOutputError as exc:
        if settings.dtype == "float16":
            raise ConfigError(
                f"{SECTION}.dtype: float16 gives non-finite scores for {settings.name!r} "
                "(overflow); use bfloat16 or float32"
            ) from exc
        raise
    return reranker
