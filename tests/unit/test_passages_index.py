"""A passages index, short of Elasticsearch: its setting, resolution, hash, mapping, the
write-back document, and what ``embed_docs`` sends to the model."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import numpy as np
import pytest

from es_embed.config import (
    BatchSettings,
    ConfigError,
    IndexSettings,
    ModelSettings,
    PassageSettings,
    settings_from_dict,
)
from es_embed.embed.service import EmbeddingService
from es_embed.embed.shape import ModelShape
from es_embed.errors import EmbedError
from es_embed.indices.document import Passage, content_hash, doc_text, vector_doc
from es_embed.indices.embedding import embed_docs
from es_embed.indices.resolve import resolve_index
from es_embed.provision import templates
from es_embed.provision.pipeline import pipeline_body
from es_embed.provision.vector_field import check_vector_field
from tests.fakes import FakeEncoder

MINILM = ModelShape("minilm", 384, matryoshka=False, max_length=256)


def index(**passages: object) -> IndexSettings:
    raw = {"indices": [{"name": "docs", "passages": passages or {}}]}
    return settings_from_dict(raw).indices[0]


def test_the_setting_is_a_small_mapping_and_absent_means_one_vector() -> None:
    assert index(max_tokens=128, overlap_tokens=16).passages == PassageSettings(128, 16)
    assert index().passages == PassageSettings(256, 32)  # the defaults
    plain = settings_from_dict({"indices": [{"name": "docs", "passages": None}]}).indices[0]
    assert plain.passages is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"max_token": 64}, "indices[0].passages.'max_token'; did you mean 'max_tokens'"),
        (64, "indices[0].passages: expected a mapping, got int"),
        ({"max_tokens": "many"}, "indices[0].passages.max_tokens: expected a number"),
    ],
)
def test_bad_settings_name_the_key(value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_dict({"indices": [{"name": "docs", "passages": value}]})
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("passages", "needle"),
    [
        ({"max_tokens": 8}, "indices[0] (docs).passages.max_tokens: at least 16, got 8"),
        ({"max_tokens": 64, "overlap_tokens": 33},
         "indices[0] (docs).passages.overlap_tokens: expected 0..32 (half of max_tokens), got 33"),
        ({"max_tokens": 64, "overlap_tokens": -1}, "overlap_tokens: expected 0..32"),
    ],
)  # fmt: skip
def test_out_of_bounds_settings_are_refused_on_loading(
    passages: dict[str, int], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        index(**passages)
    assert needle in str(info.value)


def test_passages_longer_than_the_models_window_are_refused_when_the_index_meets_it() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_index(index(max_tokens=512), MINILM)
    assert str(info.value).startswith(
        "indices (docs).passages.max_tokens: 512 is more than 'minilm' reads at once (256 tokens"
    )
    assert resolve_index(index(max_tokens=256), MINILM).passages == PassageSettings(256, 32)


def test_the_hash_covers_the_passage_settings() -> None:
    one = resolve_index(IndexSettings(name="docs"), MINILM)
    p128 = resolve_index(index(max_tokens=128, overlap_tokens=32), MINILM)
    p64 = resolve_index(index(max_tokens=64, overlap_tokens=32), MINILM)
    p128b = resolve_index(index(max_tokens=128, overlap_tokens=16), MINILM)
    assert len({one.hash("t"), p128.hash("t"), p64.hash("t"), p128b.hash("t")}) == 4
    assert one.hash("t") == content_hash("minilm", 384, "t")
    # The pipeline recomputes it from its prefix param, as for one vector.
    body = pipeline_body("docs", ("title", "text"), "embedding", "minilm", 384, (128, 32))
    prefix = body["processors"][0]["script"]["params"]["prefix"]
    assert hashlib.sha256((prefix + "t").encode()).hexdigest() == p128.hash("t")
    assert prefix == p128.hash_prefix


@pytest.mark.parametrize(
    ("source", "text", "body_start"),
    [
        ({"title": "T", "text": "body"}, "T\nbody", 2),
        ({"title": "", "text": "body"}, "body", 0),  # no title: all body
        ({"title": "only"}, "only", 0),  # nothing after the title: the title is the body
        ({"title": ["a", "b"], "text": "c"}, "a\nb\nc", 4),  # a list title is one title
    ],
)
def test_doc_text_marks_where_the_title_ends(source: dict, text: str, body_start: int) -> None:
    assert doc_text(source, ("title", "text")).text == text
    assert doc_text(source, ("title", "text")).body_start == body_start


def test_the_mapping_nests_vector_and_offsets() -> None:
    conf = index(max_tokens=128)
    conf = IndexSettings(**{**conf.__dict__, "vector_field": "emb", "index_options": "int8_hnsw",
                            "similarity": "dot_product"})  # fmt: skip
    req = templates.component_template(conf, 384, {"title": "standard", "text": "standard"})
    props = req.body["template"]["mappings"]["properties"]
    assert props["emb"] == {
        "type": "nested",
        "properties": {
            "vector": {"type": "dense_vector", "dims": 384, "index": True,
                       "similarity": "dot_product", "index_options": {"type": "int8_hnsw"}},
            "start": {"type": "integer", "index": False},
            "end": {"type": "integer", "index": False},
        },
    }  # fmt: skip
    assert "embedding" not in props and props["_embed"]["properties"]["hash"]["index"] is False
    assert templates.read_request(templates.PASSAGES_COMPONENT_FILE).console().startswith("PUT _")


@pytest.mark.parametrize(
    ("passages", "existing", "needle"),
    [
        ({"max_tokens": 64}, {"type": "dense_vector", "dims": 384},
         "holds one vector per document (dense_vector), but the configuration embeds it "
         "passage by passage"),
        (None, {"type": "nested", "properties": {"vector": {"type": "dense_vector"}}},
         "holds passages (a nested field), but the configuration asks for one vector"),
        ({"max_tokens": 64}, {"type": "nested", "properties": {"vector": {
            "type": "dense_vector", "dims": 128}}}, "'embedding.vector' has 128 dims"),
    ],
)  # fmt: skip
def test_setup_refuses_to_switch_between_one_vector_and_passages(
    passages: dict[str, int] | None, existing: dict[str, object], needle: str
) -> None:
    conf = settings_from_dict({"indices": [{"name": "docs", "passages": passages}]}).indices[0]
    with pytest.raises(EmbedError) as info:
        check_vector_field(conf, "docs-000001", 384, existing)
    assert needle in info.value.message and "index docs-000001" in info.value.message
    assert info.value.code == "mapping_conflict"


def test_matching_nested_field_passes() -> None:
    nested = {"type": "nested", "properties": {"vector": {"type": "dense_vector", "dims": 384}}}
    check_vector_field(index(max_tokens=64), "docs", 384, nested)


def test_the_write_back_is_the_whole_list_of_passages() -> None:
    passages = [Passage(0, 5, np.array([1.0, 0.0], np.float32)),
                Passage(3, 9, np.array([0.0, 1.0], np.float32))]  # fmt: skip
    doc = vector_doc("emb", "m", 2, passages, "h")
    assert doc["emb"] == [{"vector": [1.0, 0.0], "start": 0, "end": 5},
                          {"vector": [0.0, 1.0], "start": 3, "end": 9}]  # fmt: skip
    assert doc["_embed"]["hash"] == "h"
    assert vector_doc("emb", "m", 2, None, None) == {"emb": None, "_embed": None}


@pytest.fixture
async def service() -> AsyncIterator[EmbeddingService]:
    svc = EmbeddingService(FakeEncoder(), BatchSettings(), ModelSettings(name="fake"))
    await svc.start()
    yield svc
    await svc.stop()


async def test_embed_docs_sends_every_passage_as_one_input(service: EmbeddingService) -> None:
    encoder = service._encoder
    assert isinstance(encoder, FakeEncoder)
    target = resolve_index(index(max_tokens=16, overlap_tokens=0), service.info.shape)
    body = " ".join(f"w{i}" for i in range(40))
    docs = [target.text({"title": "T", "text": body}), target.text({"text": "short one"})]
    out = await embed_docs(service, target, docs)
    first, second = out
    assert isinstance(first, list) and isinstance(second, list)
    # 40 body words, 16 tokens each: the title (1) + end token (1) leave 14 per passage:
    # w0-w13, w14-w27, w28-w39 (no sentence ends, so at the budget's last word end).
    assert [(p.start, p.end) for p in first] == [(2, 47), (48, 103), (104, 151)]
    assert docs[0].text[104:151] == " ".join(f"w{i}" for i in range(28, 40))
    assert [(p.start, p.end) for p in second] == [(0, 9)]
    assert encoder.encoded_inputs == 4  # one input per passage, not per document
    passage = docs[0].text[first[1].start : first[1].end]
    expected = await service.embed_documents(["T\n" + passage], target.dims)
    np.testing.assert_allclose(first[1].vector, expected[0], atol=1e-6)  # title + passage
    assert first[1].vector.shape == (target.dims,)


async def test_a_document_with_more_passages_than_the_lane_admits_is_embedded() -> None:
    # bulk_queue 8: a request of 15 passages would be refused (429) forever; the service
    # sends them in requests of bulk_queue // 4.
    encoder = FakeEncoder()
    svc = EmbeddingService(encoder, BatchSettings(bulk_queue=8), ModelSettings(name="fake"))
    await svc.start()
    try:
        target = resolve_index(index(max_tokens=16, overlap_tokens=0), svc.info.shape)
        docs = [target.text({"text": " ".join(f"w{i}" for i in range(225))}),
                target.text({"text": "short"})]  # fmt: skip
        long, short = await embed_docs(svc, target, docs)
        assert len(long) == 15 and len(short) == 1  # type: ignore[arg-type]
        assert encoder.batches and max(encoder.batches) <= 2 and encoder.encoded_inputs == 16
    finally:
        await svc.stop()


async def test_one_vector_indices_embed_as_before(service: EmbeddingService) -> None:
    target = resolve_index(IndexSettings(name="docs"), service.info.shape)
    (vector,) = await embed_docs(service, target, [target.text({"text": "alpha beta"})])
    expected = await service.embed_documents(["alpha beta"])
    assert isinstance(vector, np.ndarray)
    np.testing.assert_allclose(vector, expected[0], atol=1e-6)
