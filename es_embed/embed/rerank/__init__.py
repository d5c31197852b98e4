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

The family is read from the model's config (``architectures``); anything else is refused
(``load.py``). ``families.py`` holds the two scorers.
"""

from es_embed.embed.rerank.families import AnyReranker, CrossEncoderReranker, Qwen3Reranker
from es_embed.embed.rerank.load import detect_family, load_reranker

__all__ = [
    "AnyReranker",
    "CrossEncoderReranker",
    "Qwen3Reranker",
    "detect_family",
    "load_reranker",
]
