"""``es-embed setup --search-key`` and ``elasticsearch.search_api_key`` on the node with
security on: the key reads the configured indices and nothing else, it is printed once and
never logged, and ``/v1/search`` runs with it, so a foreign-index lookup that got past the
sidecar's own check is refused by Elasticsearch itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from elasticsearch import AsyncElasticsearch, AuthorizationException, Elasticsearch

from devtools.es_node import Node
from es_embed.api.search import search_client
from es_embed.config import IndexSettings, Settings
from es_embed.errors import EmbedError, ErrorKind
from es_embed.indices.resolve import text_only
from es_embed.provision.search_key import create_search_key
from es_embed.search.execute import Searcher
from es_embed.search.spec import SearchSpec
from tests.api_support import api_client, make_settings
from tests.es.test_bad_input_cli import cli

pytestmark = [pytest.mark.es, pytest.mark.security]

SECRET = "sk-live-0b9e4c2a-do-not-leak"


@pytest.fixture(scope="module")
def secured(es_secure: Elasticsearch) -> Iterator[tuple[str, str]]:
    """(docs, secrets) on the secure node; the sidecar's own credentials read both."""
    docs = f"search-key-{uuid.uuid4().hex[:8]}"
    secrets = f"{docs}-secrets"
    es_secure.indices.create(
        index=docs,
        mappings={"properties": {"title": {"type": "text"}, "tags": {"type": "keyword"}}},
    )
    es_secure.index(index=docs, id="1", document={"title": "red fox", "tags": [SECRET]})
    es_secure.index(index=secrets, id="s2", document={"tags": [SECRET]})
    es_secure.indices.refresh(index=f"{docs},{secrets}")
    yield docs, secrets
    es_secure.options(ignore_status=404).indices.delete(index=f"{docs},{secrets},{docs}-state")


@pytest.fixture
async def aes_secure(es_secure_node: Node) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(**es_secure_node.client_kwargs(), request_timeout=30)
    yield client
    await client.close()


def secure_settings(node: Node, docs: str, search_key: str) -> Settings:
    assert node.basic_auth is not None
    user, password = node.basic_auth
    return make_settings(
        elasticsearch={"url": node.url, "username": user, "password": password,
                       "search_api_key": search_key},
        indices=[{"name": docs, "text_fields": ["title"]}],
    )  # fmt: skip


@pytest.mark.timeout(180)
def test_setup_prints_a_key_that_reads_only_the_configured_indices(
    es_secure_node: Node, es_secure: Elasticsearch, secured: tuple[str, str], tmp_path: Path
) -> None:
    docs, secrets = secured
    config = tmp_path / "es-embed.yaml"
    config.write_text(
        yaml.safe_dump(
            {"follow": {"state_index": f"{docs}-state"}, "indices": [{"name": docs, "dims": 64}]}
        )
    )
    assert es_secure_node.basic_auth is not None
    user, password = es_secure_node.basic_auth
    env = {"ES_EMBED_ELASTICSEARCH_URL": es_secure_node.url,
           "ES_EMBED_ELASTICSEARCH_USERNAME": user,
           "ES_EMBED_ELASTICSEARCH_PASSWORD": password}  # fmt: skip
    code, out, err = cli("setup", "--config", config, "--search-key", env=env)
    assert code == 0, (out, err)
    lines = out.strip().splitlines()
    assert f"read on {docs};" in lines[-2] and "shown only this once" in lines[-2]
    key = lines[-1]
    assert (out + err).count(key) == 1  # printed once, nowhere else
    client = Elasticsearch(hosts=[es_secure_node.url], api_key=key, request_timeout=30)
    try:
        assert client.search(index=docs)["hits"]["total"]["value"] == 1
        # A wildcard sees only what the key may read: the one document of docs.
        assert client.search(index="*")["hits"]["total"]["value"] == 1
        with pytest.raises(AuthorizationException):
            client.search(index=secrets)
        with pytest.raises(AuthorizationException):
            client.get(index=secrets, id="s2")
        with pytest.raises(AuthorizationException):
            client.index(index=docs, document={"title": "written"})
    finally:
        key_id = client.security.authenticate()["api_key"]["id"]
        client.close()
        es_secure.security.invalidate_api_key(ids=[key_id])


@pytest.mark.timeout(180)
async def test_search_runs_with_the_key_and_elasticsearch_holds_the_boundary(
    es_secure_node: Node, aes_secure: AsyncElasticsearch, secured: tuple[str, str]
) -> None:
    docs, secrets = secured
    key = await create_search_key(aes_secure, [docs])
    settings = secure_settings(es_secure_node, docs, key.encoded)
    try:
        async with api_client(settings) as c:
            resp = await c.post("/v1/search", json={"index": docs, "query": "fox", "mode": "bm25"})
            body = await resp.json()
            assert resp.status == 200, body
            assert [h["_id"] for h in body["hits"]] == ["1"]
        # A lookup built in code skips the sidecar's check: the key stops it in Elasticsearch.
        lookup = {"terms": {"tags": {"index": secrets, "id": "s2", "path": "tags"}}}
        spec = SearchSpec(index=docs, query="fox", mode="bm25", filter=(lookup,))
        target = [text_only(IndexSettings(name=docs, text_fields=("title",)), "m")]
        with_key = search_client(settings)
        assert with_key is not None
        try:
            with pytest.raises(EmbedError) as info:
                await Searcher(with_key, _no_vectors, target).search(spec)
        finally:
            await with_key.close()
        assert info.value.code == "search_rejected" and info.value.kind is ErrorKind.INVALID_REQUEST
        assert secrets not in info.value.message and SECRET not in info.value.message
        # The sidecar's own credentials would have read it: the refusal was the key's.
        hits = await Searcher(aes_secure, _no_vectors, target).search(spec)
        assert [h.id for h in hits.hits] == ["1"]
    finally:
        await aes_secure.security.invalidate_api_key(ids=[key.id])
    assert key.encoded not in repr(key)


@pytest.mark.timeout(120)
def test_search_key_without_security_is_one_line_exit_2(es_url: str, tmp_path: Path) -> None:
    name = f"search-key-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "es-embed.yaml"
    config.write_text(
        yaml.safe_dump(
            {"follow": {"state_index": f"{name}-state"}, "indices": [{"name": name, "dims": 64}]}
        )
    )
    es = Elasticsearch(hosts=[es_url])
    try:
        code, out, err = cli(
            "setup", "--config", config, "--search-key", env={"ES_EMBED_ELASTICSEARCH_URL": es_url}
        )
    finally:
        es.options(ignore_status=404).indices.delete(index=f"{name},{name}-state")
        es.close()
    assert code == 2, (out, err)
    assert err.startswith("error: cannot create the search API key") and err.count("\n") == 1


async def _no_vectors(text: str, dims: int | None) -> Any:
    raise AssertionError("bm25 needs no vector")
