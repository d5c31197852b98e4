"""--pipeline and --inference-endpoint: real where the cluster can, a clear refusal where not."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from elasticsearch import AsyncElasticsearch

from es_embed.cli import setup as setup_cli
from es_embed.config import settings_from_dict
from es_embed.errors import EmbedError
from es_embed.indices.document import content_hash
from es_embed.provision.setup import Setup, node_modules
from tests.es.follow_support import unique
from tests.es.test_setup_indices import await_in_thread
from tests.fakes import ANY_SHAPE

pytestmark = pytest.mark.es


@pytest.fixture
async def names_and_client(es_url: str):  # type: ignore[no-untyped-def]
    es = AsyncElasticsearch(es_url)
    name, state = unique("pipe"), unique("state")
    settings = settings_from_dict(
        {
            "model": {"name": "fake-encoder"},
            "server": {"api_keys": ["sidecar-key"]},  # what the inference endpoint sends
            "indices": [{"name": name, "dims": 32, "text_fields": ["title", "body.text"]}],
            "follow": {"state_index": state},
        }
    )
    yield es, settings, name
    await es.options(ignore_status=404).indices.delete(index=f"{name},{state}")
    await es.options(ignore_status=404).indices.delete_index_template(name=f"es-embed-{name}")
    await es.options(ignore_status=404).cluster.delete_component_template(name=f"es-embed-{name}")
    await es.options(ignore_status=404).ingest.delete_pipeline(id=f"es-embed-{name}")
    await es.close()


async def test_pipeline_is_refused_clearly_without_the_modules(names_and_client) -> None:  # type: ignore[no-untyped-def]
    es, settings, name = names_and_client
    if {"ingest-common", "lang-painless"} <= await node_modules(es):
        pytest.skip("this node has ingest-common and lang-painless")
    with pytest.raises(EmbedError) as err:
        await Setup(es, settings, ANY_SHAPE, pipeline=True).run()
    assert "ingest-common" in err.value.message or "lang-painless" in err.value.message
    assert err.value.param == "pipeline"
    assert not await es.indices.exists(index=name)  # refused before touching anything


@pytest.mark.full_distribution("ingest-common", "lang-painless")
async def test_pipeline_drops_a_vector_whose_hash_no_longer_matches(names_and_client) -> None:  # type: ignore[no-untyped-def]
    es, settings, name = names_and_client
    await Setup(es, settings, ANY_SHAPE, pipeline=True).run()
    again = await Setup(es, settings, ANY_SHAPE, pipeline=True).run()
    assert f"pipeline es-embed-{name}: unchanged" in again.actions
    text = "A title\nnested body"
    good = content_hash("fake-encoder", 32, text)
    vector = [0.1] * 32
    doc = {"title": "A title", "body": {"text": "nested body"}, "embedding": vector}
    await es.index(index=name, id="fresh", document={**doc, "_embed": {"hash": good}})
    await es.index(
        index=name, id="stale",
        document={**doc, "title": "Edited title", "_embed": {"hash": good}},
    )  # fmt: skip
    fresh = (await es.get(index=name, id="fresh", source_exclude_vectors=False))["_source"]
    stale = (await es.get(index=name, id="stale", source_exclude_vectors=False))["_source"]
    assert fresh["_embed"]["hash"] == good and len(fresh["embedding"]) == 32
    assert "embedding" not in stale and "_embed" not in stale


async def test_inference_endpoint_needs_a_cluster_that_has_the_inference_api(
    names_and_client,  # type: ignore[no-untyped-def]
) -> None:
    es, settings, name = names_and_client
    probe = await es.options(ignore_status=(400, 404, 405, 403)).perform_request(
        "GET", "/_inference/_all", headers={"accept": "application/json"}
    )
    if probe.meta.status == 200:
        report = await Setup(es, settings, ANY_SHAPE, inference_url="http://127.0.0.1:8080").run()
        endpoint = f"es-embed-{name}"
        try:
            assert any(endpoint in line for line in report.actions)
        finally:
            await es.options(ignore_status=404).perform_request(
                "DELETE", f"/_inference/text_embedding/{endpoint}",
                headers={"accept": "application/json"},
            )  # fmt: skip
        return
    with pytest.raises(EmbedError) as err:
        await Setup(es, settings, ANY_SHAPE, inference_url="http://127.0.0.1:8080").run()
    assert err.value.code == "inference_unavailable"
    assert "inference" in err.value.message


async def test_inference_endpoint_without_a_key_is_refused_before_anything_is_written(
    es_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, state = unique("infer"), unique("state")
    config = tmp_path / "es-embed.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "elasticsearch": {"url": es_url},
                "model": {"name": "fake-encoder"},
                "follow": {"state_index": state},
                "indices": [{"name": name, "dims": 48}],
            }
        )
    )
    args = argparse.Namespace(
        config=str(config), index=None, pipeline=False,
        inference_endpoint="http://127.0.0.1:8080", print_only=False,
    )  # fmt: skip
    assert await_in_thread(setup_cli.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --inference-endpoint:"), err
    assert "server.api_keys" in err[0] and "server.api_keys_file" in err[0]
    es = AsyncElasticsearch(es_url)
    try:
        assert not await es.indices.exists(index=name)
        assert not await es.indices.exists(index=state)
        assert not await es.cluster.exists_component_template(name=f"es-embed-{name}")
    finally:
        await es.close()
