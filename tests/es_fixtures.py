"""Fixtures for a real Elasticsearch node; where it comes from is devtools/es_node.py's job.

- ``es_node`` / ``es_url`` / ``es``: one node for the whole session (``ES_URL`` if set, else
  Docker, else the integ-test zip started on a free port), a sync client on it.
- ``aes``: an ``AsyncElasticsearch`` on that node for one test (clients are bound to the event
  loop, and pytest-asyncio gives each test its own).
- ``index_name``: a fresh lowercase name; the index and any ``<name>*`` index are deleted after.
- ``es_secure_node`` / ``es_secure``: a second node with security on (basic auth as
  ``elastic``, API keys work), started only when a test asks for it.
- ``@pytest.mark.full_distribution`` (optionally naming modules) skips a test, with the reason,
  when the node lacks ingest-common, lang-painless or analysis-common; ``require_modules(es,
  ...)`` does the same from inside a test.

The version the node answers to ``GET /`` is printed at the end of every run that used it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from elasticsearch import AsyncElasticsearch, Elasticsearch

from devtools.es_node import Node, NodeError, start_node

FULL_DISTRIBUTION_MODULES = ("ingest-common", "lang-painless", "analysis-common")
ES_FIXTURES = {"es_node", "es_url", "es", "aes", "index_name", "es_secure_node", "es_secure"}

# What each started node answered to GET /, for the terminal summary.
_SEEN: list[tuple[Node, dict[str, Any] | str]] = []


def _start(security: bool) -> Node:
    try:
        node = start_node(security=security)
    except NodeError as exc:
        # A missing node is an error, not a skip: these tests exist to run against one.
        pytest.fail(f"no Elasticsearch node: {exc}", pytrace=False)
    client = Elasticsearch(**node.client_kwargs())
    try:
        _SEEN.append((node, dict(client.info())))
    except Exception as exc:  # e.g. a zip without the stand-in GET / handler
        _SEEN.append((node, f"GET / failed: {exc}"))
    finally:
        client.close()
    return node


@pytest.fixture(scope="session")
def es_node() -> Iterator[Node]:
    node = _start(security=False)
    yield node
    node.stop()


@pytest.fixture(scope="session")
def es_url(es_node: Node) -> str:
    return es_node.url


@pytest.fixture(scope="session")
def es(es_node: Node) -> Iterator[Elasticsearch]:
    client = Elasticsearch(**es_node.client_kwargs(), request_timeout=30)
    yield client
    client.close()


@pytest.fixture
async def aes(es_node: Node) -> AsyncIterator[AsyncElasticsearch]:
    client = AsyncElasticsearch(**es_node.client_kwargs(), request_timeout=30)
    yield client
    await client.close()


@pytest.fixture
def index_name(request: pytest.FixtureRequest, es: Elasticsearch) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"test-{base}-{uuid.uuid4().hex[:8]}"
    yield name
    delete_indices(es, f"{name}*")


def delete_indices(es: Elasticsearch, pattern: str) -> None:
    """Delete the indices matching a pattern by their names (works where wildcards are refused)."""
    resolved = es.indices.resolve_index(name=pattern, expand_wildcards="all")
    names = [item["name"] for item in resolved.get("indices", [])]
    if names:
        es.indices.delete(index=",".join(names), ignore_unavailable=True)


@pytest.fixture(scope="session")
def es_secure_node() -> Iterator[Node]:
    node = _start(security=True)
    yield node
    node.stop()


@pytest.fixture(scope="session")
def es_secure(es_secure_node: Node) -> Iterator[Elasticsearch]:
    client = Elasticsearch(**es_secure_node.client_kwargs(), request_timeout=30)
    yield client
    client.close()


def node_modules(es: Elasticsearch) -> set[str]:
    """Module names every node of the cluster has (``GET _nodes/plugins``)."""
    nodes = es.nodes.info(metric="plugins")["nodes"].values()
    sets = [{m["name"] for m in n.get("modules", [])} for n in nodes]
    return set.intersection(*sets) if sets else set()


def require_modules(es: Elasticsearch, *names: str) -> None:
    """Skip the calling test, naming what is missing, unless the cluster has these modules."""
    missing = sorted(set(names or FULL_DISTRIBUTION_MODULES) - node_modules(es))
    if missing:
        pytest.skip(
            f"needs Elasticsearch modules {', '.join(missing)}, which this node lacks "
            "(the integ-test zip has none of them); run with ES_URL pointing at a full "
            "distribution or with a Docker engine"
        )


@pytest.fixture(autouse=True)
def _full_distribution(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("full_distribution")
    if marker is not None:
        require_modules(request.getfixturevalue("es"), *marker.args)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that touch a node carry the `es` marker, so `-m "not es"` runs without one.
    for item in items:
        if ES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.es)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for node, answer in _SEEN:
        where = f"{node.url} ({node.source}{', security on' if node.basic_auth else ''})"
        if isinstance(answer, dict):
            version = answer["version"]
            terminalreporter.write_line(
                f"Elasticsearch at {where}: GET / answered version {version['number']} "
                f"(build {version.get('build_type')} {version.get('build_hash', '')[:12]}, "
                f"Lucene {version.get('lucene_version')}, cluster {answer.get('cluster_name')})"
            )
        else:
            terminalreporter.write_line(
                f"Elasticsearch at {where}: version {node.version}; {answer}"
            )
