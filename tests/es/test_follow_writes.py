"""Every kind of write by the plain client ends with the vector of the current text."""

from __future__ import annotations

import pytest

from tests.es.follow_support import (
    all_current,
    all_docs,
    followed_index,
    running,
    stale_documents,
    wait_until,
)

pytestmark = pytest.mark.es


async def test_every_kind_of_write_gets_the_vector_of_its_current_text(es_url: str) -> None:
    async with followed_index(es_url) as env, running(env.follower()):
        es, index = env.es, env.index
        await es.index(index=index, id="single", document={"title": "Solo", "text": "one doc"})
        await es.bulk(
            operations=[
                op
                for i in range(40)
                for op in (
                    {"index": {"_index": index, "_id": f"bulk-{i}"}},
                    {"title": f"Bulk {i}", "text": f"bulk text number {i}"},
                )
            ]
        )
        await es.index(index=index, id="doomed", document={"title": "Gone", "text": "soon"})
        await wait_until(lambda: all_current(env), what="first writes embedded")

        await es.update(index=index, id="single", doc={"text": "a partial update"})
        await es.bulk(
            operations=[
                op
                for i in range(0, 40, 3)
                for op in (
                    {"update": {"_index": index, "_id": f"bulk-{i}"}},
                    {"doc": {"text": f"bulk partial update {i}"}},
                )
            ]
        )
        await es.delete(index=index, id="doomed")
        await wait_until(lambda: all_current(env), what="updates embedded")

        docs = await all_docs(es, index)
        assert "doomed" not in docs
        assert len(docs) == 41
        assert docs["single"]["_embed"]["model"] == "fake-encoder"
        assert docs["single"]["_embed"]["dims"] == 32
        assert len(docs["single"]["embedding"]) == 32
        assert stale_documents(env, docs) == []


async def test_missing_or_empty_text_is_skipped_and_a_cleared_text_loses_its_vector(
    es_url: str,
) -> None:
    async with followed_index(es_url) as env:
        follower = env.follower()
        async with running(follower):
            es, index = env.es, env.index
            await es.index(index=index, id="none", document={"other": "no text fields"})
            await es.index(index=index, id="blank", document={"title": "  ", "text": ""})
            await es.index(index=index, id="odd", document={"title": 42, "text": ["", None]})
            await es.index(index=index, id="real", document={"title": "T", "text": "body"})
            await wait_until(lambda: all_current(env), what="real doc embedded")
            await es.update(index=index, id="real", doc={"title": None, "text": " "})
            await wait_until(lambda: all_current(env), what="cleared vector removed")
        docs = await all_docs(env.es, env.index)
        assert docs["real"].get("embedding") is None
        assert docs["real"].get("_embed") is None
        for doc_id in ("none", "blank", "odd"):
            assert "embedding" not in docs[doc_id]
        assert follower.progress.failed == 0
        assert follower.progress.cleared == 1
        assert env.encoder.encoded_inputs == 1  # only "real", once


async def test_routed_and_nested_fields_are_written_back_to_the_right_place(
    es_url: str,
) -> None:
    async with (
        followed_index(es_url, text_fields=["meta.title", "body"], vector_field="vec.main") as env,
        running(env.follower()),
    ):
        es, index = env.es, env.index
        await es.index(
            index=index, id="r", routing="user-7",
            document={"meta": {"title": "Routed"}, "body": "nested fields"},
        )  # fmt: skip
        await wait_until(lambda: all_current_nested(env), what="routed doc embedded")
        doc = await es.get(index=index, id="r", routing="user-7", source_exclude_vectors=False)
        assert len(doc["_source"]["vec"]["main"]) == 32
        assert doc["_source"]["_embed"]["hash"] == env.target.hash("Routed\nnested fields")


async def all_current_nested(env) -> bool:  # type: ignore[no-untyped-def]
    docs = await all_docs(env.es, env.index)
    return bool(docs) and all("vec" in d and d.get("_embed") for d in docs.values())


async def test_a_document_written_back_whole_without_its_vector_gets_it_again(
    es_url: str,
) -> None:
    # Elasticsearch 9 leaves vectors out of _source, so GET + modify + PUT drops the vector
    # while the copied _embed.hash still matches the text.
    async with followed_index(es_url) as env, running(env.follower()):
        es, index = env.es, env.index
        await es.index(index=index, id="rmw", document={"title": "Keep", "text": "my vector"})
        await wait_until(lambda: all_current(env), what="first vector")
        source = (await es.get(index=index, id="rmw"))["_source"]
        assert "embedding" not in source and source["_embed"]["hash"]
        await es.index(index=index, id="rmw", document={**source, "tag": "edited"})
        await wait_until(lambda: all_current(env), what="vector restored")
        assert env.encoder.encoded_inputs == 2
