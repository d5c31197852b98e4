"""``setup --inference-endpoint``: the request body, at the boundary to Elasticsearch.

The test node may lack the inference plugin, so what would be sent is recorded here; the
refusal without a key also runs end to end (tests/es/test_setup_pipeline.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders
from elasticsearch import NotFoundError

from es_embed.config import ConfigError, Settings, settings_from_dict
from es_embed.provision.setup import Setup
from tests.fakes import ANY_SHAPE


class InferenceApi:
    """Answers GET of an endpoint with 404 (none yet) and records each PUT."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, dict[str, Any]]] = []

    async def perform_request(self, method: str, path: str, **kw: Any) -> Any:
        if method == "GET":
            meta = ApiResponseMeta(404, "1.1", HttpHeaders(), 0.0, None)  # type: ignore[arg-type]
            raise NotFoundError("resource_not_found_exception", meta, {})
        assert method == "PUT"
        self.puts.append((path, kw["body"]))
        return None


class NoCalls:
    """Any request at all fails the test: the refusal must come before Elasticsearch."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"setup called Elasticsearch ({name}) before refusing")


def settings(**server: Any) -> Settings:
    return settings_from_dict(
        {
            "model": {"name": "fake-encoder"},
            "server": server,
            "indices": [{"name": "docs", "dims": 48}],
        }
    )


async def registered(s: Settings, url: str) -> tuple[str, dict[str, Any]]:
    es = InferenceApi()
    setup = Setup(es, s, ANY_SHAPE)  # type: ignore[arg-type]
    await setup.inference_endpoint(s.indices[0], url)
    assert len(es.puts) == 1
    return es.puts[0]


async def test_the_key_comes_from_api_keys_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# sidecar keys\nfrom-the-file\n")
    path, body = await registered(settings(api_keys_file=str(keys)), "http://sidecar:8080/")
    assert path == "/_inference/text_embedding/es-embed-docs"
    assert body == {
        "service": "openai",
        "service_settings": {
            "api_key": "from-the-file",
            "model_id": "fake-encoder",
            "url": "http://sidecar:8080/v1/embeddings",
            "dimensions": 48,
        },
    }


async def test_keys_from_both_places_give_one_accepted_key_every_time(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("b-file-key\n")
    s = settings(api_keys=["c-setting-key", "a-setting-key"], api_keys_file=str(keys))
    first = await registered(s, "http://sidecar:8080/v1/embeddings")
    again = await registered(s, "http://sidecar:8080/v1/embeddings")
    assert first[1]["service_settings"]["api_key"] == "a-setting-key"
    assert first == again  # a re-run sends the same request
    assert first[1]["service_settings"]["url"] == "http://sidecar:8080/v1/embeddings"


@pytest.mark.parametrize("server", [{}, {"api_keys": []}])
async def test_without_a_key_setup_refuses_before_touching_elasticsearch(
    server: dict[str, Any],
) -> None:
    s = settings(**server)
    with pytest.raises(ConfigError) as err:
        await Setup(NoCalls(), s, ANY_SHAPE, inference_url="http://sidecar:8080").run()  # type: ignore[arg-type]
    message = str(err.value)
    assert "server.api_keys" in message and "server.api_keys_file" in message
    assert "--inference-endpoint" in message and "es-embed-no-key" not in message
    with pytest.raises(ConfigError):
        await registered(s, "http://sidecar:8080")


async def test_an_unreadable_keys_file_is_named(tmp_path: Path) -> None:
    s = settings(api_keys_file=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="server.api_keys_file: cannot read"):
        await Setup(NoCalls(), s, ANY_SHAPE, inference_url="http://sidecar:8080").run()  # type: ignore[arg-type]
