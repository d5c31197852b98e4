"""The Qwen3-Reranker model card's reference code ("Transformers Usage" on
https://huggingface.co/Qwen/Qwen3-Reranker-0.6B: ``format_instruction``, ``process_inputs``,
``compute_logits``) in plain transformers, with the prompt parts and the padding side as
parameters so a test can also run it wrong on purpose."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)


@dataclass(frozen=True)
class Recipe:
    prefix: str = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n"
    suffix: str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    pair: str = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
    padding_side: str = "left"


MODEL_CARD = Recipe()
WRONG = {
    # vLLM's early template (#19344): blank lines between the parts.
    "blank lines": replace(
        MODEL_CARD, pair="<Instruct>: {instruction}\n\n<Query>: {query}\n\n<Document>: {doc}"
    ),
    "no think block": replace(MODEL_CARD, suffix="<|im_end|>\n<|im_start|>assistant\n"),
    "no system line": replace(MODEL_CARD, prefix="<|im_start|>user\n"),
    "right padding": replace(MODEL_CARD, padding_side="right"),
}


def reference_scores(
    model_dir: Path,
    query: str,
    documents: list[str],
    recipe: Recipe = MODEL_CARD,
    instruction: str | None = None,
    max_length: int = 8192,  # the model card's
) -> np.ndarray:
    """The model card's code, with the prompt parts and padding side as parameters."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), padding_side=recipe.padding_side)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(recipe.prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(recipe.suffix, add_special_tokens=False)

    def format_instruction(instruction: str | None, query: str, doc: str) -> str:
        if instruction is None:
            instruction = DEFAULT_TASK
        return recipe.pair.format(instruction=instruction, query=query, doc=doc)

    def process_inputs(pairs: list[str]) -> dict[str, torch.Tensor]:
        inputs = tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        with warnings.catch_warnings():
            # The card passes max_length to pad(), which transformers 5 warns it ignores.
            warnings.simplefilter("ignore", UserWarning)
            return tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)

    @torch.no_grad()
    def compute_logits(inputs: dict[str, torch.Tensor]) -> list[float]:
        batch_scores = model(**inputs).logits[:, -1, :]
        true_vector = batch_scores[:, token_true_id]
        false_vector = batch_scores[:, token_false_id]
        batch_scores = torch.stack([false_vector, true_vector], dim=1)
        batch_scores = torch.nn.functional.log_softmax(batch_scores, dim=1)
        return batch_scores[:, 1].exp().tolist()

    pairs = [format_instruction(instruction, query, doc) for doc in documents]
    return np.array(compute_logits(process_inputs(pairs)), dtype=np.float32)
