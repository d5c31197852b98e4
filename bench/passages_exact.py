"""How a document's score is made from its passages' scores, computed exactly (numpy, no
Elasticsearch) over the same passages and vectors as the passage index.

Elasticsearch's nested kNN scores a document by its best passage (``max``). Beside it:
``mean`` (the average over all of the document's passages) and ``first`` (its first passage
alone, the title and the opening), to show what the aggregation does on a dataset. Run by
``bench/passages.py``; cheap with ``--vector-cache`` (every vector is already remembered).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.quality import IGNORE_IDENTICAL_IDS, Dataset
from bench.quality_eval import halves, ndcg_at
from es_embed.embed.protocol import Encoder
from es_embed.indices.document import doc_text
from es_embed.indices.passages import pieces

BATCH = 64


def _vectors(encoder: Encoder, inputs: list[Any]) -> np.ndarray:
    return np.concatenate(
        [encoder.forward(inputs[i : i + BATCH]) for i in range(0, len(inputs), BATCH)]
    )


def aggregations(
    encoder: Encoder, data: Dataset, fields: tuple[str, ...], max_tokens: int, overlap: int
) -> dict[str, dict[str, float]]:
    """nDCG@10 on each half of the queries for each way of scoring a document."""
    ids = sorted(data.corpus)
    docs = [doc_text(data.corpus[d], fields) for d in ids]
    inputs, owner = [], []
    for i, (doc, spans) in enumerate(zip(docs, encoder.spans([d.text for d in docs]), strict=True)):
        for piece in pieces(doc.text, doc.body_start, spans.ids, spans.offsets,
                            max_tokens=max_tokens, overlap=overlap,
                            specials=encoder.info.special_tokens):  # fmt: skip
            inputs.append(encoder.wrap(piece.ids))
            owner.append(i)
    passages, of = _vectors(encoder, inputs), np.array(owner)
    qids = list(data.queries)
    scores = _vectors(encoder, encoder.tokenize([data.queries[q] for q in qids])) @ passages.T
    n = len(ids)
    best = np.full((len(qids), n), -np.inf)
    np.maximum.at(best.T, of, scores.T)
    total = np.zeros((len(qids), n))
    np.add.at(total.T, of, scores.T)
    first = np.searchsorted(of, np.arange(n))  # passages are in document order
    ways = {"max": best, "mean": total / np.bincount(of, minlength=n), "first": scores[:, first]}
    drop_self = data.name in IGNORE_IDENTICAL_IDS
    out = {}
    for name, table in ways.items():
        run = {}
        for row, q in enumerate(qids):
            top = np.argsort(-table[row])[:101]
            run[q] = [ids[j] for j in top if not (drop_self and ids[j] == q)][:100]
        out[name] = {half: ndcg_at(run, qrels, 10) for half, qrels in halves(data.qrels).items()}
    return out
