"""Shared by the search tests on a real node: a small corpus indexed with MiniLM vectors,
and an embedding service on the same model."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from es_embed.config import BatchSettings, IndexSettings, ModelSettings
from es_embed.embed.protocol import Encoder
from es_embed.embed.service import EmbeddingService
from es_embed.indices.resolve import resolve_index
from es_embed.search.execute import Searcher

# No distractor shares a token with the queries below, so what each leg finds is telling.
DOCS: dict[str, dict[str, str]] = {
    "cat": {"title": "", "topic": "pets",
             "text": "The feline dozed all afternoon, curled up on the warm rug."},
    "code": {"title": "Flux unit fault", "topic": "tech",
             "text": "Error QX7731 means the flux regulator lost its calibration."},
    "dog": {"title": "Walks", "topic": "pets",
             "text": "Dogs need a long walk every morning and evening."},
    "fish": {"title": "", "topic": "pets",
             "text": "Goldfish bowls should be cleaned once a week."},
    "bread": {"title": "Baking", "topic": "food",
             "text": "Knead the dough for ten minutes before letting it rise."},
    "soup": {"title": "", "topic": "food",
             "text": "A tomato soup tastes better with fresh basil."},
    "stocks": {"title": "Markets", "topic": "money",
             "text": "Share prices fell after the central bank raised interest rates."},
    "tax": {"title": "", "topic": "money",
             "text": "File your tax return before the end of April."},
    "goal": {"title": "Football", "topic": "sport",
             "text": "The striker scored twice in the second half."},
    "tennis": {"title": "", "topic": "sport",
             "text": "She won the final in three tight sets."},
    "rain": {"title": "Weather", "topic": "weather",
             "text": "Heavy rain is expected across the north tomorrow."},
    "snow": {"title": "", "topic": "weather",
             "text": "Snowfall closed the mountain roads overnight."},
    "engine": {"title": "Cars", "topic": "tech",
             "text": "Change the engine oil every ten thousand kilometres."},
    "python": {"title": "", "topic": "tech",
             "text": "Python lists grow automatically as items are appended."},
    "roses": {"title": "Garden", "topic": "garden",
             "text": "Prune roses in late winter to encourage new growth."},
    "piano": {"title": "", "topic": "music",
             "text": "Practise piano scales slowly before speeding up."},
}  # fmt: skip
PARAPHRASE = "cat sleeping upon carpet"  # meaning of "cat", no shared token
RARE = "QX7731"  # one exact token, meaningless to the model
BOTH = f"{PARAPHRASE} {RARE}"


def text_and_vector(dims: int, **fields: str) -> dict[str, Any]:
    """The mapping of a searchable test index: title and text, ``fields`` (name: type), and
    the ``embedding`` dense_vector of ``dims``."""
    return {
        "properties": {
            "title": {"type": "text"},
            "text": {"type": "text"},
            **{name: {"type": kind} for name, kind in fields.items()},
            "embedding": {"type": "dense_vector", "dims": dims, "similarity": "cosine"},
        }
    }


@pytest.fixture(scope="module")
def corpus(es: Elasticsearch, minilm_encoder: Encoder) -> Iterator[IndexSettings]:
    name = f"test-search-{uuid.uuid4().hex[:8]}"
    dims = minilm_encoder.info.hidden_size
    es.indices.create(index=name, mappings=text_and_vector(dims, topic="keyword"))
    ids = list(DOCS)
    texts = [f"{DOCS[i]['title']}\n{DOCS[i]['text']}".strip() for i in ids]
    vectors = minilm_encoder.forward(minilm_encoder.tokenize(texts))
    ops: list[dict[str, Any]] = []
    for doc_id, vec in zip(ids, vectors, strict=True):
        ops.append({"index": {"_index": name, "_id": doc_id}})
        ops.append({**DOCS[doc_id], "embedding": vec.tolist()})
    resp = es.bulk(operations=ops, refresh=True)
    assert not resp["errors"], resp
    yield IndexSettings(name=name, text_fields=("title", "text"), vector_field="embedding")
    es.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture
async def service(minilm_encoder: Encoder) -> AsyncIterator[EmbeddingService]:
    svc = EmbeddingService(minilm_encoder, BatchSettings(), ModelSettings(name="minilm"))
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture
def searcher(aes: AsyncElasticsearch, service: EmbeddingService, corpus: IndexSettings) -> Searcher:
    return Searcher(aes, service.embed_query, [resolve_index(corpus, service.info.shape)])
