"""Bearer API keys: 401 in the OpenAI envelope, constant-time match, open or protected ops."""

from __future__ import annotations

from pathlib import Path

import pytest

from es_embed.api.app import create_app
from es_embed.config import ConfigError, load_settings
from tests.api_support import api_client, error_of, make_settings

KEYS = ("key-one-secret", "key-two-secret")
BODY = {"input": "hello"}


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, ("requires an API key",)),
        ({"Authorization": "Bearer wrong-key"}, ("not valid",)),
        ({"Authorization": "Bearer key-one-secre"}, ("not valid",)),  # a prefix is not the key
        ({"Authorization": "Basic a2V5LW9uZS1zZWNyZXQ="}, ("Bearer <key>",)),
        ({"Authorization": "Bearer "}, ("Bearer <key>",)),
        ({"Authorization": "Bearer kéy"}, ("not valid",)),
    ],
)
async def test_missing_or_wrong_key_is_401(headers: dict[str, str], words: tuple[str, ...]) -> None:
    async with api_client(make_settings(server={"api_keys": list(KEYS)})) as c:
        resp = await c.post("/v1/embeddings", json=BODY, headers=headers)
        error = await error_of(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    for word in words:
        assert word in error["message"]
    for key in KEYS:  # secrets never echoed
        assert key not in error["message"]


async def test_every_configured_key_is_accepted() -> None:
    async with api_client(make_settings(server={"api_keys": list(KEYS)})) as c:
        for key in KEYS:
            resp = await c.post(
                "/v1/embeddings", json=BODY, headers={"Authorization": f"Bearer {key}"}
            )
            assert resp.status == 200, await resp.text()
        # Routes not found are still behind the key: no probing of paths without one.
        assert (await c.get("/v1/models")).status == 401


async def test_health_and_metrics_open_by_default_protected_on_request() -> None:
    async with api_client(make_settings(server={"api_keys": list(KEYS)})) as c:
        assert (await c.get("/health")).status == 200
        assert (await c.get("/metrics")).status == 200
    settings = make_settings(
        server={"api_keys": list(KEYS), "protect_health": True, "protect_metrics": True}
    )
    async with api_client(settings) as c:
        await error_of(await c.get("/health"), 401)
        await error_of(await c.get("/metrics"), 401)
        auth = {"Authorization": f"Bearer {KEYS[1]}"}
        assert (await c.get("/health", headers=auth)).status == 200
        metrics = await (await c.get("/metrics", headers=auth)).text()
        # The 401s are counted, and no key appears in the metrics.
        assert 'route="/health",status="401"' in metrics
        assert all(key not in metrics for key in KEYS)


async def test_keys_from_environment_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# comment\nfile-key\n\n")
    settings = load_settings(
        None,
        env={
            "ES_EMBED_SERVER_API_KEYS": "env-a, env-b",
            "ES_EMBED_SERVER_API_KEYS_FILE": str(keys_file),
            "ES_EMBED_MODEL_NAME": "fake-encoder",
        },
    )
    async with api_client(settings) as c:
        for key, status in (("env-a", 200), ("env-b", 200), ("file-key", 200), ("# comment", 401)):
            resp = await c.post(
                "/v1/embeddings", json=BODY, headers={"Authorization": f"Bearer {key}"}
            )
            assert resp.status == status, key


def test_unreadable_keys_file_fails_at_app_creation(tmp_path: Path) -> None:
    settings = make_settings(server={"api_keys_file": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="server.api_keys_file"):
        create_app(settings)


async def test_no_keys_means_open() -> None:
    async with api_client() as c:
        assert (await c.post("/v1/embeddings", json=BODY)).status == 200
