"""A passages index followed on a real node: one write-back carries every passage, a shorter
text leaves no stale passage, a lost passage list comes back, new settings re-embed, and
setup refuses to switch an index between one vector and passages."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.config import PassageSettings
from es_embed.errors import EmbedError
from es_embed.provision.setup import Setup
from tests.es.follow_support import Env, all_docs, followed_index, running, wait_until
from tests.fakes import ANY_SHAPE

pytestmark = pytest.mark.es

# 16 tokens a passage, less the end token: 15 words each with no title and no overlap.
PASSAGES = {"max_tokens": 16, "overlap_tokens": 0}


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


async def passages_in_es(es: AsyncElasticsearch, index: str, doc_id: str) -> int:
    """Nested documents Elasticsearch holds for this document (not only its _source)."""
    await es.indices.refresh(index=index)
    resp = await es.search(
        index=index,
        query={"bool": {"filter": [{"ids": {"values": [doc_id]}}], "must": [{"nested": {
            "path": "embedding", "query": {"match_all": {}},
            "inner_hits": {"size": 100, "_source": False}}}]}},
    )  # fmt: skip
    hits = resp["hits"]["hits"]
    return int(hits[0]["inner_hits"]["embedding"]["hits"]["total"]["value"]) if hits else 0


def passages_current(env: Env, docs: dict[str, dict[str, Any]]) -> bool:
    target = env.target
    return all(
        d.get("_embed", {}).get("hash") == target.hash(target.text(d).text) and d.get("embedding")
        for d in docs.values()
    )


async def test_a_rewrite_from_twenty_passages_to_two_keeps_exactly_two(es_url: str) -> None:
    async with followed_index(es_url, passages=PASSAGES) as env, running(env.follower()):
        es, index = env.es, env.index
        await es.index(index=index, id="doc", document={"text": words(300)})

        async def count_is(n: int) -> bool:
            docs = await all_docs(es, index)
            return len(docs["doc"].get("embedding") or []) == n and passages_current(env, docs)

        await wait_until(lambda: count_is(20), what="20 passages written")
        assert await passages_in_es(es, index, "doc") == 20
        embedded = env.encoder.encoded_inputs
        assert embedded == 20  # one model input per passage

        await es.update(index=index, id="doc", doc={"text": words(30)})
        await wait_until(lambda: count_is(2), what="the rewrite embedded")
        assert await passages_in_es(es, index, "doc") == 2
        doc = (await all_docs(es, index))["doc"]
        assert [(p["start"], p["end"]) for p in doc["embedding"]] == [(0, 49), (50, 109)]
        assert all(len(p["vector"]) == 32 for p in doc["embedding"])
        assert env.encoder.encoded_inputs == embedded + 2


async def test_passages_a_client_dropped_are_written_again(es_url: str) -> None:
    async with followed_index(es_url, passages=PASSAGES) as env, running(env.follower()):
        es, index = env.es, env.index
        await es.index(index=index, id="doc", document={"title": "T", "text": words(40)})

        async def has_passages() -> bool:
            return bool((await all_docs(es, index))["doc"].get("embedding"))

        await wait_until(has_passages, what="passages written")
        # A read-modify-write: _source comes back without the vectors; the client writes
        # the document whole, _embed (still matching the text) included.
        source = (await es.get(index=index, id="doc", source_excludes=["embedding"]))["_source"]
        await es.index(index=index, id="doc", document=source)
        assert not (await all_docs(es, index))["doc"].get("embedding")
        await wait_until(has_passages, what="the lost passages written again")
        assert await passages_in_es(es, index, "doc") == 3


async def test_new_passage_settings_re_embed_every_document(es_url: str) -> None:
    async with followed_index(es_url, passages=PASSAGES) as env:
        for i in range(3):
            await env.es.index(index=env.index, id=str(i), document={"text": words(45)})
        first = await env.follower().run_once_to_current()
        assert first.embedded == 3 and env.encoder.encoded_inputs == 9

        conf = env.settings.indices[0]
        wider = dataclasses.replace(conf, passages=PassageSettings(32, 0))
        env.settings = dataclasses.replace(env.settings, indices=(wider,))
        second = await env.follower().run_once_to_current()
        assert second.embedded == 3  # the hash covers max_tokens: every vector is stale
        docs = await all_docs(env.es, env.index)
        assert {len(d["embedding"]) for d in docs.values()} == {2}  # 45 words, 31 a passage
        assert passages_current(env, docs)


@pytest.mark.parametrize(
    ("before", "after", "needle"),
    [
        (None, PASSAGES, "holds one vector per document (dense_vector), but the configuration "
                         "embeds it passage by passage (a nested field)"),
        (PASSAGES, None, "holds passages (a nested field), but the configuration asks for one "
                         "vector per document"),
    ],
)  # fmt: skip
async def test_setup_refuses_to_switch_an_index_between_one_vector_and_passages(
    es_url: str, before: dict[str, int] | None, after: dict[str, int] | None, needle: str
) -> None:
    async with followed_index(es_url, passages=before) as env:
        conf = dataclasses.replace(
            env.settings.indices[0], passages=after and PassageSettings(**after)
        )
        switched = dataclasses.replace(env.settings, indices=(conf,))
        with pytest.raises(EmbedError) as info:
            await Setup(env.es, switched, ANY_SHAPE).run()
        assert needle in info.value.message and env.index in info.value.message
        assert "reindex" in info.value.message and info.value.code == "mapping_conflict"
