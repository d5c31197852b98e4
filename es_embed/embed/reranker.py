"""Rerankers: a second, optional model that scores (query, document) pairs.

Two families, each scoring exactly as its reference does:

- **Qwen3-Reranker** (a ``Qwen3ForCausalLM``), by the authors' recipe on the model card
  (https://huggingface.co/Qwen/Qwen3-Reranker-0.6B, "Transformers Usage": ``format_instruction``,
  ``process_inputs``, ``compute_logits``, with ``prefix``/``suffix`` and
  ``token_true_id``/``token_false_id``): ``<Instruct>: {instruction}\\n<Query>: {query}\\n
  <Document>: {doc}`` tokenised and cut to leave room for the chat turns around it (the system
  line, the user turn, the assistant prefix with an empty think block), left padding, and
  score = softmax over the ``no``/``yes`` logits at the last position = P(yes).
- **sentence-transformers CrossEncoder** models (``*ForSequenceClassification``, one label):
  the tokenizer's own pair template, longest-first truncation, and the activation
  ``CrossEncoder.predict`` applies (declared in the model's files; sigmoid by default), so
  scores equal ``CrossEncoder.predict``.

The family is read from the model's config (``architectures``); anything else is refused.
Tokenisation runs on a private Rust tokenizer (thread-safe, as in ``encoder.py``); ``forward``
runs only on the model thread, in the same lanes as the embedder's batches.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from es_embed.config import ConfigError, RerankerSettings
from es_embed.embed.encoder import (
    NonFiniteOutputError,
    attention_mask,
    dtype_name,
    load_config_and_tokenizer,
    load_pretrained,
    pad_ids,
    pad_rows,
    private_tokenizer,
    real_positions,
    resolve_device,
    resolve_dtype,
    token_limit,
    tokenizer_specials,
)
from es_embed.embed.protocol import RerankerFamily, RerankerInfo, Tokenized
from es_embed.embed.st_config import local_dir, read_json

log = logging.getLogger(__name__)

SECTION = "reranker"
QWEN3_ARCHITECTURE = "Qwen3ForCausalLM"
# The Qwen3-Reranker model card's prompt, word for word.
QWEN3_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
QWEN3_PREFIX = f"<|im_start|>system\n{QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n"
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
# Activations CrossEncoder.predict may apply, by the class name its files declare.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Sigmoid": torch.sigmoid,
    "Identity": lambda x: x,
    "Tanh": torch.tanh,
}
PROBE = ("es-embed start-up probe", "is every score finite?")

Activation = Callable[[torch.Tensor], torch.Tensor]


def qwen3_pair_text(instruction: str, query: str, document: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class Qwen3Reranker:
    """P(yes) of Qwen3-Reranker for each pair."""

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        info: RerankerInfo,
        *,
        instruction: str,
        head: Sequence[int],
        tail: Sequence[int],
        answer_ids: tuple[int, int],
        pad_id: int,
    ) -> None:
        self._model = model
        self._tok = tokenizer
        self._info = info
        self._instruction = instruction
        self._head = tuple(head)  # the prompt's prefix, then the tokenizer's own leading specials
        self._tail = tuple(tail)  # the tokenizer's own trailing specials, then the prompt's suffix
        self._no, self._yes = answer_ids
        self._pad_id = pad_id
        self._device = torch.device(info.device)
        # Only the last position's logits are read: skip the vocabulary projection elsewhere.
        self._keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def info(self) -> RerankerInfo:
        return self._info

    def tokenize_pairs(
        self, query: str, documents: Sequence[str], instruction: str | None = None
    ) -> list[Tokenized]:
        task = instruction or self._instruction
        texts = [qwen3_pair_text(task, query, doc) for doc in documents]
        fixed = len(self._head) + len(self._tail)
        room = self._info.max_length - fixed
        out = []
        for enc in self._tok.encode_batch_fast(texts, add_special_tokens=False):
            # As the model card's process_inputs: the pair text is cut at its end (so a long
            # document loses its tail), then the chat turns go around it.
            ids = (*self._head, *enc.ids[:room], *self._tail)
            out.append(Tokenized(ids=ids, original_length=len(enc.ids) + fixed))
        return out

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if not batch:
            return np.zeros(0, dtype=np.float32)
        # Left padding puts every pair's last token in the last column, where the answer is read.
        ids = pad_ids(batch, self._pad_id, left=True)
        mask = attention_mask(batch, left=True)
        with torch.inference_mode():
            attention = torch.from_numpy(mask).to(self._device)
            kwargs: dict[str, Any] = {
                "input_ids": torch.from_numpy(ids).to(self._device),
                "attention_mask": attention,
                "position_ids": real_positions(attention),
            }
            if self._keep_last:
                kwargs["logits_to_keep"] = 1
            last = self._model(**kwargs).logits[:, -1, :]
            answers = last[:, [self._no, self._yes]].float()
            scores = torch.softmax(answers, dim=1)[:, 1]
        return _checked(scores, self._info)


class CrossEncoderReranker:
    """A sequence-classification model's one logit per pair, through its declared activation."""

    def __init__(
        self,
        model: Any,
        tokenizer: Tokenizer,
        info: RerankerInfo,
        *,
        activation: Activation,
        pad_id: int,
        pad_type_id: int,
        pass_type_ids: bool,
    ) -> None:
        self._model = model
        self._tok = tokenizer
        # A second copy that truncates like CrossEncoder's tokenizer call; the first one tells
        # the original length, which truncation would hide.
        self._cut = Tokenizer.from_str(tokenizer.to_str())
        self._cut.enable_truncation(info.max_length, strategy="longest_first")
        self._info = info
        self._activation = activation
        self._pad_id = pad_id
        self._pad_type_id = pad_type_id
        self._pass_type_ids = pass_type_ids
        self._device = torch.device(info.device)

    @property
    def info(self) -> RerankerInfo:
        return self._info

    def tokenize_pairs(
        self, query: str, documents: Sequence[str], instruction: str | None = None
    ) -> list[Tokenized]:
        pairs = [(query, doc) for doc in documents]
        encodings = self._tok.encode_batch_fast(pairs, add_special_tokens=True)
        lengths = [len(enc.ids) for enc in encodings]
        long = [i for i, n in enumerate(lengths) if n > self._info.max_length]
        if long:
            cut = self._cut.encode_batch_fast([pairs[i] for i in long], add_special_tokens=True)
            for i, enc in zip(long, cut, strict=True):
                encodings[i] = enc
        return [
            Tokenized(ids=tuple(enc.ids), original_length=n, type_ids=tuple(enc.type_ids))
            for enc, n in zip(encodings, lengths, strict=True)
        ]

    def forward(self, batch: Sequence[Tokenized]) -> np.ndarray:
        if not batch:
            return np.zeros(0, dtype=np.float32)
        # Right padding keeps absolute position embeddings where they were trained (BERT).
        ids = pad_ids(batch, self._pad_id, left=False)
        mask = attention_mask(batch, left=False)
        with torch.inference_mode():
            kwargs: dict[str, Any] = {
                "input_ids": torch.from_numpy(ids).to(self._device),
                "attention_mask": torch.from_numpy(mask).to(self._device),
            }
            if self._pass_type_ids:
                types = pad_rows([t.type_ids or () for t in batch], self._pad_type_id, left=False)
                kwargs["token_type_ids"] = torch.from_numpy(types).to(self._device)
            logits = self._model(**kwargs).logits.float()  # [n, 1], upcast as predict does
            scores = self._activation(logits).squeeze(-1)
        return _checked(scores, self._info)


def _checked(scores: torch.Tensor, info: RerankerInfo) -> np.ndarray:
    if not bool(torch.isfinite(scores).all()):
        raise NonFiniteOutputError(f"reranker output is not finite ({info.dtype} on {info.device})")
    return scores.cpu().numpy().astype(np.float32, copy=False)


AnyReranker = Qwen3Reranker | CrossEncoderReranker


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


def load_reranker(settings: RerankerSettings) -> AnyReranker:
    """Load the configured reranker, detect its family, and self-check it."""
    name = settings.name
    if not name:
        raise ConfigError(f"{SECTION}.name: no reranker is configured")
    device = resolve_device(settings.device, SECTION)
    dtype = resolve_dtype(settings.dtype, device, SECTION)
    config, hf_tokenizer = load_config_and_tokenizer(name, section=SECTION)
    family = detect_family(config, name)
    tokenizer = private_tokenizer(hf_tokenizer)
    reranker: AnyReranker
    if family == "qwen3":
        reranker = _load_qwen3(settings, config, hf_tokenizer, tokenizer, device, dtype)
    else:
        reranker = _load_cross_encoder(settings, config, hf_tokenizer, tokenizer, device, dtype)
    log.info(
        "reranker %s: %s family, max %d tokens per pair, %s on %s",
        reranker.info.model_id,
        family,
        reranker.info.max_length,
        reranker.info.dtype,
        reranker.info.device,
    )
    return _self_check(reranker, settings)


def _info(
    settings: RerankerSettings,
    family: RerankerFamily,
    max_length: int,
    device: torch.device,
    dtype: torch.dtype,
) -> RerankerInfo:
    return RerankerInfo(settings.model_id, family, max_length, str(device), dtype_name(dtype))


def _load_qwen3(
    settings: RerankerSettings,
    config: Any,
    hf_tokenizer: Any,
    tokenizer: Tokenizer,
    device: torch.device,
    dtype: torch.dtype,
) -> Qwen3Reranker:
    from transformers import AutoModelForCausalLM

    name = str(settings.name)
    yes, no = tokenizer.token_to_id("yes"), tokenizer.token_to_id("no")
    if yes is None or no is None:
        raise ConfigError(
            f"{SECTION}.name: {name!r} has no 'yes'/'no' tokens to read its answer from; "
            "is it a Qwen3-Reranker?"
        )
    opening, closing = tokenizer_specials(tokenizer, name, SECTION)
    head = [*tokenizer.encode(QWEN3_PREFIX, add_special_tokens=False).ids, *opening]
    tail = [*closing, *tokenizer.encode(QWEN3_SUFFIX, add_special_tokens=False).ids]
    max_length = token_limit(
        settings.max_length, config, hf_tokenizer, None, len(head) + len(tail), SECTION
    )
    if hasattr(config, "use_cache"):
        config.use_cache = False  # one forward pass per pair: a KV cache only costs memory
    net = load_pretrained(AutoModelForCausalLM, name, config, device, dtype, section=SECTION)
    pad_id = hf_tokenizer.pad_token_id
    return Qwen3Reranker(
        net,
        tokenizer,
        _info(settings, "qwen3", max_length, device, dtype),
        instruction=settings.instruction,
        head=head,
        tail=tail,
        answer_ids=(no, yes),
        pad_id=pad_id if pad_id is not None else no,  # masked out anyway
    )


def _load_cross_encoder(
    settings: RerankerSettings,
    config: Any,
    hf_tokenizer: Any,
    tokenizer: Tokenizer,
    device: torch.device,
    dtype: torch.dtype,
) -> CrossEncoderReranker:
    from transformers import AutoModelForSequenceClassification

    name = str(settings.name)
    if getattr(config, "num_labels", 1) != 1:
        raise ConfigError(
            f"{SECTION}.name: {name!r} has {config.num_labels} labels; a reranker needs one "
            "relevance score per pair (num_labels: 1)"
        )
    directory = local_dir(name)
    files = _cross_encoder_files(directory)
    declared = files.get("max_seq_length")
    max_length = token_limit(
        settings.max_length,
        config,
        hf_tokenizer,
        declared if isinstance(declared, int) and declared > 0 else None,
        hf_tokenizer.num_special_tokens_to_add(pair=True),
        SECTION,
    )
    net = load_pretrained(
        AutoModelForSequenceClassification, name, config, device, dtype, section=SECTION
    )
    return CrossEncoderReranker(
        net,
        tokenizer,
        _info(settings, "cross-encoder", max_length, device, dtype),
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
