"""The two reranker families, each scoring as its reference does (see ``__init__``).

Tokenisation runs on a private Rust tokenizer (thread-safe, as in ``encoder.py``); ``forward``
runs only on the device's query thread, in the same lanes as the embedder's batches.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from es_embed.embed.encoder import (
    NonFiniteOutputError,
    attention_mask,
    pad_ids,
    pad_rows,
    real_positions,
)
from es_embed.embed.protocol import RerankerInfo, Tokenized

SECTION = "reranker"
QWEN3_ARCHITECTURE = "Qwen3ForCausalLM"
# The Qwen3-Reranker model card's prompt, word for word ("Transformers Usage" on
# https://huggingface.co/Qwen/Qwen3-Reranker-0.6B: prefix, suffix, format_instruction).
QWEN3_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
QWEN3_PREFIX = f"<|im_start|>system\n{QWEN3_SYSTEM}<|im_end|>\n<|im_start|>user\n"
QWEN3_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
Activation = Callable[[torch.Tensor], torch.Tensor]
# Activations CrossEncoder.predict may apply, by the class name its files declare.
ACTIVATIONS: dict[str, Activation] = {
    "Sigmoid": torch.sigmoid,
    "Identity": lambda x: x,
    "Tanh": torch.tanh,
}


def qwen3_pair_text(instruction: str, query: str, document: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class PairModel:
    """What both families hold: the model, a private tokenizer copy, the served info."""

    def __init__(self, model: Any, tokenizer: Tokenizer, info: RerankerInfo) -> None:
        self._model = model
        self._tok = tokenizer
        self._info = info
        self._device = torch.device(info.device)

    @property
    def info(self) -> RerankerInfo:
        return self._info

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self._device)

    def _inputs(self, batch: Sequence[Tokenized], pad_id: int, *, left: bool) -> dict[str, Any]:
        return {
            "input_ids": self._tensor(pad_ids(batch, pad_id, left=left)),
            "attention_mask": self._tensor(attention_mask(batch, left=left)),
        }


class Qwen3Reranker(PairModel):
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
        super().__init__(model, tokenizer, info)
        self._instruction = instruction
        self._head = tuple(head)  # the prompt's prefix, then the tokenizer's own leading specials
        self._tail = tuple(tail)  # the tokenizer's own trailing specials, then the prompt's suffix
        self._no, self._yes = answer_ids
        self._pad_id = pad_id
        # Only the last position's logits are read: skip the vocabulary projection elsewhere.
        self._keep_last = "logits_to_keep" in inspect.signature(model.forward).parameters

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
        with torch.inference_mode():
            # Left padding puts every pair's last token in the last column, where the answer
            # is read; real positions keep a pair's score independent of its batch.
            kwargs = self._inputs(batch, self._pad_id, left=True)
            kwargs["position_ids"] = real_positions(kwargs["attention_mask"])
            if self._keep_last:
                kwargs["logits_to_keep"] = 1
            last = self._model(**kwargs).logits[:, -1, :]
            answers = last[:, [self._no, self._yes]].float()
            scores = torch.softmax(answers, dim=1)[:, 1]
        return _checked(scores, self._info)


class CrossEncoderReranker(PairModel):
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
        super().__init__(model, tokenizer, info)
        # A second copy that truncates like CrossEncoder's tokenizer call; the first one tells
        # the original length, which truncation would hide.
        self._cut = Tokenizer.from_str(tokenizer.to_str())
        self._cut.enable_truncation(info.max_length, strategy="longest_first")
        self._activation = activation
        self._pad_id = pad_id
        self._pad_type_id = pad_type_id
        self._pass_type_ids = pass_type_ids

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
        with torch.inference_mode():
            # Right padding keeps absolute position embeddings where they were trained (BERT).
            kwargs = self._inputs(batch, self._pad_id, left=False)
            if self._pass_type_ids:
                types = pad_rows([t.type_ids or () for t in batch], self._pad_type_id, left=False)
                kwargs["token_type_ids"] = self._tensor(types)
            logits = self._model(**kwargs).logits.float()  # [n, 1], upcast as predict does
            scores = self._activation(logits).squeeze(-1)
        return _checked(scores, self._info)


def _checked(scores: torch.Tensor, info: RerankerInfo) -> np.ndarray:
    if not bool(torch.isfinite(scores).all()):
        raise NonFiniteOutputError(f"reranker output is not finite ({info.dtype} on {info.device})")
    return scores.cpu().numpy().astype(np.float32, copy=False)


AnyReranker = Qwen3Reranker | CrossEncoderReranker
