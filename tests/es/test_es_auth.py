"""Access control towards Elasticsearch: API key and basic auth against the node started with
security on, through ``build_client(ElasticsearchSettings)`` and through the environment
overrides (ES_EMBED_ELASTICSEARCH_*) as ``es-embed`` reads them; wrong credentials give a
clear error that does not echo the secret."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from elasticsearch import AuthenticationException, Elasticsearch

from devtools.es_node import Node
from es_embed.config import ElasticsearchSettings, load_settings
from es_embed.elastic.client import build_client, describe_client
from tests.es.test_bad_input_cli import cli

pytestmark = [pytest.mark.es, pytest.mark.security]

WRONG_PASSWORD = "wrong-pw-7f3a9c1e-not-the-real-one"
WRONG_API_KEY = (
    "V3JvbmdLZXlJZDp3cm9uZy1zZWNyZXQtNGQ5YTJi"  # base64 "WrongKeyId:wrong-secret-4d9a2b"
)


@pytest.fixture(scope="module")
def api_key(es_secure: Elasticsearch) -> Iterator[str]:
    resp = es_secure.security.create_api_key(name=f"es-embed-test-{uuid.uuid4().hex[:6]}")
    yield str(resp["encoded"])
    es_secure.security.invalidate_api_key(ids=[resp["id"]])


def basic(node: Node) -> tuple[str, str]:
    assert node.basic_auth is not None
    return node.basic_auth


async def info_with(settings: ElasticsearchSettings) -> dict[str, Any]:
    client = build_client(settings)
    try:
        return dict(await client.info())
    finally:
        await client.close()


@pytest.mark.timeout(120)
async def test_basic_auth_from_settings(es_secure_node: Node) -> None:
    user, password = basic(es_secure_node)
    info = await info_with(
        ElasticsearchSettings(url=es_secure_node.url, username=user, password=password)
    )
    assert info["version"]["number"]


@pytest.mark.timeout(120)
async def test_api_key_from_settings(es_secure_node: Node, api_key: str) -> None:
    s = ElasticsearchSettings(url=es_secure_node.url, api_key=api_key)
    client = build_client(s)
    try:
        who = await client.security.authenticate()
    finally:
        await client.close()
    assert who["authentication_type"] == "api_key"
    assert describe_client(s) == f"{es_secure_node.url} (api key)"


@pytest.mark.timeout(120)
async def test_credentials_from_the_environment(es_secure_node: Node, api_key: str) -> None:
    user, password = basic(es_secure_node)
    by_key = load_settings(
        None,
        env={"ES_EMBED_ELASTICSEARCH_URL": es_secure_node.url,
             "ES_EMBED_ELASTICSEARCH_API_KEY": api_key},
    )  # fmt: skip
    assert (await info_with(by_key.elasticsearch))["version"]["number"]
    by_password = load_settings(
        None,
        env={"ES_EMBED_ELASTICSEARCH_URL": es_secure_node.url,
             "ES_EMBED_ELASTICSEARCH_USERNAME": user,
             "ES_EMBED_ELASTICSEARCH_PASSWORD": password},
    )  # fmt: skip
    assert (await info_with(by_password.elasticsearch))["version"]["number"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["password", "api_key"])
async def test_wrong_credentials_fail_clearly(es_secure_node: Node, kind: str) -> None:
    if kind == "password":
        s = ElasticsearchSettings(
            url=es_secure_node.url, username="elastic", password=WRONG_PASSWORD
        )
        secret = WRONG_PASSWORD
    else:
        s = ElasticsearchSettings(url=es_secure_node.url, api_key=WRONG_API_KEY)
        secret = WRONG_API_KEY
    with pytest.raises(AuthenticationException) as err:
        await info_with(s)
    assert err.value.meta.status == 401
    assert secret not in str(err.value) and secret not in repr(err.value)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["password", "api_key", "no credentials"])
def test_cli_with_wrong_credentials_exits_1_without_the_secret(
    es_secure_node: Node, tmp_path: Path, kind: str
) -> None:
    config = tmp_path / "es-embed.yaml"
    config.write_text(yaml.safe_dump({"indices": [{"name": "auth-probe", "dims": 64}]}))
    env = {"ES_EMBED_ELASTICSEARCH_URL": es_secure_node.url}
    if kind == "password":
        env |= {"ES_EMBED_ELASTICSEARCH_USERNAME": "elastic",
                "ES_EMBED_ELASTICSEARCH_PASSWORD": WRONG_PASSWORD}  # fmt: skip
    elif kind == "api_key":
        env["ES_EMBED_ELASTICSEARCH_API_KEY"] = WRONG_API_KEY
    code, out, err = cli("setup", "--config", config, env=env)
    assert code == 1, (code, out, err)
    assert err.startswith("error: Elasticsearch answered 401"), err
    assert err.count("\n") == 1, err
    for secret in (WRONG_PASSWORD, WRONG_API_KEY):
        assert secret not in out + err


@pytest.mark.timeout(120)
def test_setup_with_an_api_key_from_the_environment(
    es_secure_node: Node, es_secure: Elasticsearch, api_key: str, tmp_path: Path
) -> None:
    index = f"auth-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "es-embed.yaml"
    config.write_text(
        yaml.safe_dump(
            {"follow": {"state_index": f"{index}-state"}, "indices": [{"name": index, "dims": 64}]}
        )
    )
    env = {"ES_EMBED_ELASTICSEARCH_URL": es_secure_node.url,
           "ES_EMBED_ELASTICSEARCH_API_KEY": api_key}  # fmt: skip
    try:
        code, out, err = cli("setup", "--config", config, env=env)
        assert code == 0, (out, err)
        assert api_key not in out + err
        mapping = es_secure.indices.get_mapping(index=index)
        assert mapping[index]["mappings"]["properties"]["embedding"]["dims"] == 64
    finally:
        es_secure.options(ignore_status=404).indices.delete(index=f"{index},{index}-state")
