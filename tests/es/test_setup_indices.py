"""es-embed setup on the real node: create, extend, refuse, fall back, and do it twice."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from elasticsearch import AsyncElasticsearch

from es_embed.cli import setup as setup_cli
from es_embed.config import settings_from_dict
from es_embed.errors import EmbedError
from es_embed.provision.setup import Setup, node_modules
from tests.es.follow_support import unique
from tests.fakes import ANY_SHAPE

pytestmark = pytest.mark.es


def settings_for(name: str, state: str, **conf: object):  # type: ignore[no-untyped-def]
    return settings_from_dict(
        {"indices": [{"name": name, "dims": 48, **conf}], "follow": {"state_index": state}}
    )


@pytest.fixture
async def client(es_url: str):  # type: ignore[no-untyped-def]
    es = AsyncElasticsearch(es_url)
    names: list[str] = []
    yield es, names
    for name in names:
        await es.options(ignore_status=404).indices.delete(index=name)
        await es.options(ignore_status=404).indices.delete_index_template(name=f"es-embed-{name}")
        await es.options(ignore_status=404).cluster.delete_component_template(
            name=f"es-embed-{name}"
        )
    await es.close()


async def run_setup(es: AsyncElasticsearch, settings, **kw):  # type: ignore[no-untyped-def]
    return await Setup(es, settings, ANY_SHAPE, **kw).run()


async def test_setup_creates_a_missing_index_and_is_idempotent(client) -> None:  # type: ignore[no-untyped-def]
    es, names = client
    name, state = unique("setup"), unique("state")
    names += [name, state]
    settings = settings_for(name, state, similarity="dot_product", index_options="flat")
    first = await run_setup(es, settings)
    assert f"index {name}: created" in first.actions
    assert f"state index {state}: created" in first.actions
    mapping = (await es.indices.get_mapping(index=name))[name]["mappings"]["properties"]
    vector = mapping["embedding"]
    assert (vector["type"], vector["dims"], vector["similarity"]) == (
        "dense_vector", 48, "dot_product",
    )  # fmt: skip
    assert vector["index_options"]["type"] == "flat"
    assert mapping["_embed"]["properties"]["hash"] == {"type": "keyword", "index": False}
    assert mapping["title"]["type"] == "text"

    second = await run_setup(es, settings)
    assert f"index {name}: mapping already in place" in second.actions
    assert f"component template es-embed-{name}: unchanged" in second.actions
    assert f"state index {state}: exists" in second.actions
    assert not any("created" in line or "updated" in line for line in second.actions)


async def test_setup_adds_the_mapping_to_an_existing_index(client) -> None:  # type: ignore[no-untyped-def]
    es, names = client
    name, state = unique("setup"), unique("state")
    names += [name, state]
    await es.index(index=name, id="1", document={"title": "kept", "text": "as is"}, refresh=True)
    report = await run_setup(es, settings_for(name, state))
    assert any("added the vector mapping" in line for line in report.actions)
    mapping = (await es.indices.get_mapping(index=name))[name]["mappings"]["properties"]
    assert mapping["embedding"]["dims"] == 48
    assert (await es.get(index=name, id="1"))["_source"] == {"title": "kept", "text": "as is"}


@pytest.mark.parametrize(
    ("existing", "conf", "words"),
    [
        ({"dims": 64, "similarity": "cosine"}, {}, ["64 dims", "asks for 48", "dims: 64"]),
        ({"dims": 48, "similarity": "l2_norm"}, {}, ["l2_norm", "'cosine'"]),
    ],
)
async def test_setup_refuses_a_vector_field_with_other_dims_or_similarity(
    client,
    existing,
    conf,
    words,  # type: ignore[no-untyped-def]
) -> None:
    es, names = client
    name, state = unique("setup"), unique("state")
    names += [name, state]
    await es.indices.create(
        index=name, mappings={"properties": {"embedding": {"type": "dense_vector", **existing}}}
    )
    with pytest.raises(EmbedError) as err:
        await run_setup(es, settings_for(name, state, **conf))
    assert name in err.value.message
    for word in words:
        assert word in err.value.message
    mapping = (await es.indices.get_mapping(index=name))[name]["mappings"]["properties"]
    assert mapping["embedding"]["dims"] == existing["dims"]  # untouched


async def test_setup_cli_exits_2_with_one_line_on_a_mismatch(
    client,
    tmp_path: Path,
    es_url: str,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    es, names = client
    name, state = unique("setup"), unique("state")
    names += [name, state]
    await es.indices.create(
        index=name, mappings={"properties": {"embedding": {"type": "dense_vector", "dims": 64}}}
    )
    config = tmp_path / "es-embed.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "elasticsearch": {"url": es_url},
                "follow": {"state_index": state},
                "indices": [{"name": name, "dims": 48}],
            }
        )
    )
    args = argparse.Namespace(
        config=str(config), index=None, pipeline=False, inference_endpoint=None, print_only=False
    )
    assert await_in_thread(setup_cli.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: index ") and "64 dims" in err[0]


async def test_setup_refuses_matryoshka_dims_for_a_plain_model_and_writes_nothing(
    client,
    tmp_path: Path,
    es_url: str,
    minilm_dir: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    es, names = client
    fine, truncated, state = unique("setup"), unique("setup"), unique("state")
    names += [fine, truncated, state]
    config = tmp_path / "es-embed.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "elasticsearch": {"url": es_url},
                "model": {"name": str(minilm_dir)},
                "follow": {"state_index": state},
                # The first index is fine; the second asks MiniLM for 128 of its 384 dims.
                "indices": [{"name": fine}, {"name": truncated, "dims": 128}],
            }
        )
    )
    args = argparse.Namespace(
        config=str(config), index=None, pipeline=False, inference_endpoint=None, print_only=False
    )
    assert await_in_thread(setup_cli.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: indices ({truncated}).dims: 128"), err
    assert repr(minilm_dir.name) in err[0] and "Matryoshka" in err[0]
    for name in (fine, truncated, state):  # refused before any write
        assert not await es.indices.exists(index=name)


def await_in_thread(func, args):  # type: ignore[no-untyped-def]
    """The CLI calls asyncio.run itself, which cannot nest in the test's running loop."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(func, args).result()


async def test_cjk_falls_back_to_standard_without_analysis_common(client) -> None:  # type: ignore[no-untyped-def]
    es, names = client
    if "analysis-common" in await node_modules(es):
        pytest.skip("this node has analysis-common: cjk is used as configured")
    name, state = unique("setup"), unique("state")
    names += [name, state]
    report = await run_setup(es, settings_for(name, state, analyzers={"title": "cjk"}))
    assert any("'cjk'" in n and "analysis-common" in n and "standard" in n for n in report.notes)
    mapping = (await es.indices.get_mapping(index=name))[name]["mappings"]["properties"]
    assert mapping["title"].get("analyzer", "standard") == "standard"


@pytest.mark.full_distribution("analysis-common")
async def test_cjk_is_used_where_the_node_has_it(client) -> None:  # type: ignore[no-untyped-def]
    es, names = client
    name, state = unique("setup"), unique("state")
    names += [name, state]
    report = await run_setup(es, settings_for(name, state, analyzers={"title": "cjk"}))
    assert report.notes == []
    mapping = (await es.indices.get_mapping(index=name))[name]["mappings"]["properties"]
    assert mapping["title"]["analyzer"] == "cjk"
