"""Every kind of write by the plain client ends with the vector of the current text."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from es_embed.follow.feed import ShardFeed
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


async def test_a_document_that_no_longer_fits_the_mapping_is_given_up_not_blocking(
    es_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    given_up: list[tuple[str, str]] = []
    give_up = ShardFeed._give_up

    async def spy(feed: ShardFeed, hit: dict[str, Any], reason: str) -> None:
        given_up.append((hit["_id"], reason))
        await give_up(feed, hit, reason)

    monkeypatch.setattr(ShardFeed, "_give_up", spy)
    async with followed_index(es_url) as env:
        es, index = env.es, env.index
        await es.index(index=index, id="misfit", document={"title": "not a number", "text": "x"})
        # An integer sub-field added afterwards: the text already stored no longer parses, so
        # any write to this document (our vector included) is refused until it is rewritten.
        mapping = await es.indices.get_mapping(index=index)
        title = mapping[index]["mappings"]["properties"]["title"]
        title["fields"] = {**title.get("fields", {}), "n": {"type": "integer"}}
        await es.indices.put_mapping(index=index, properties={"title": title})
        ops = []
        for i in range(30):
            ops += [{"index": {"_index": index, "_id": f"later-{i}"}},
                    {"title": str(i), "text": f"written after the misfit {i}"}]  # fmt: skip
        resp = await es.bulk(operations=ops)
        assert not resp["errors"]
        last = max(int(item["index"]["_seq_no"]) for item in resp["items"])
        follower = env.follower()
        with caplog.at_level(logging.ERROR, logger="es_embed.follow.feed"):
            async with running(follower):

                async def later_current_and_passed() -> bool:
                    docs = await all_docs(es, index)
                    later = {k: v for k, v in docs.items() if k != "misfit"}
                    stale = stale_documents(env, later)
                    return not stale and min(follower.checkpoints.values()) >= last

                # Not the freshness bound: this test is about outcomes, on a shared machine.
                await wait_until(later_current_and_passed, 30, "later documents embedded")
        docs = await all_docs(es, index)
        assert "embedding" not in docs["misfit"] and "_embed" not in docs["misfit"]
        assert [doc_id for doc_id, _ in given_up] == ["misfit"]
        assert "document_parsing_exception" in given_up[0][1]
        assert follower.progress.failed == 1
        assert f"{index}: document misfit is skipped and listed as failed" in caplog.text
