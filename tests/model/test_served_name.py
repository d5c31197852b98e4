"""A model loaded from a local directory is served under a name, never under its path.

The app loads the tiny Qwen3 from the path in ``model.name`` exactly as ``es-embed serve``
does; every response a client can see (``/health``, ``/v1/models``, ``/v1/embeddings``,
including the 404 for an unknown model) must name the directory, not the filesystem path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.app import create_app
from es_embed.config import settings_from_dict


async def responses(model: dict[str, Any]) -> dict[str, tuple[int, str, Any]]:
    """(status, raw text, JSON) of each endpoint, the model loaded from ``model['name']``."""
    settings = settings_from_dict({"model": {"device": "cpu", **model}})
    out: dict[str, tuple[int, str, Any]] = {}
    async with TestClient(TestServer(create_app(settings))) as client:
        calls = {
            "health": client.get("/health"),
            "models": client.get("/v1/models"),
            "embeddings": client.post("/v1/embeddings", json={"input": ["a short text"]}),
            "unknown model": client.post(
                "/v1/embeddings", json={"input": "x", "model": "not-this-one"}
            ),
        }
        for name, call in calls.items():
            resp = await call
            text = await resp.text()
            out[name] = (resp.status, text, await resp.json())
    return out


def assert_served_as(got: dict[str, tuple[int, str, Any]], served: str, path: Path) -> None:
    status, _, health = got["health"]
    assert status == 200 and health["status"] == "healthy" and health["model"] == served
    status, _, models = got["models"]
    assert status == 200 and [m["id"] for m in models["data"]] == [served]
    status, _, embeddings = got["embeddings"]
    assert status == 200 and embeddings["model"] == served
    status, _, unknown = got["unknown model"]
    assert status == 404 and served in unknown["error"]["message"]
    for name, (_, text, _) in got.items():
        # The parent alone would already tell a client where the model lives.
        assert str(path.parent) not in text, f"{name} shows the model's path: {text}"


@pytest.mark.timeout(120)
async def test_a_local_directory_is_served_under_its_base_name(tiny_qwen_dir: Path) -> None:
    got = await responses({"name": str(tiny_qwen_dir)})
    assert_served_as(got, tiny_qwen_dir.name, tiny_qwen_dir)


@pytest.mark.timeout(120)
async def test_a_relative_directory_is_served_under_its_base_name(
    tiny_qwen_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_qwen_dir.parent.parent)
    relative = f"./{tiny_qwen_dir.parent.name}/{tiny_qwen_dir.name}/"
    got = await responses({"name": relative})
    assert_served_as(got, tiny_qwen_dir.name, tiny_qwen_dir)
    for name, (_, text, _) in got.items():
        assert tiny_qwen_dir.parent.name not in text, f"{name} shows the relative path: {text}"


@pytest.mark.timeout(120)
async def test_served_name_wins_over_the_directory(tiny_qwen_dir: Path) -> None:
    got = await responses({"name": str(tiny_qwen_dir), "served_name": "qwen3-tiny"})
    assert_served_as(got, "qwen3-tiny", tiny_qwen_dir)
    for name, (_, text, _) in got.items():
        assert tiny_qwen_dir.name not in text, f"{name} shows the directory name: {text}"
