"""Secrets never leave the process: not in logs (DEBUG included), error messages, /metrics,
the settings' repr, the serve log, or ``search --dev-console`` output.

Known secret values are configured (the sidecar's API key, an Elasticsearch password, an
Elasticsearch API key); everything the process says is collected and grepped for them.
Elasticsearch is a closed port here, so every path that talks to it fails and logs its
failure: those error paths are where a secret would slip out.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.app import create_app
from es_embed.config import load_settings, settings_from_dict
from es_embed.elastic.client import describe_client
from tests.fakes import FakeEncoder
from tests.faults.support import REPO, Sidecar, free_port, sidecar_env

SIDECAR_KEY = "sk-sidecar-5e1f0c9a7b3d4e2f"
OTHER_KEY = "sk-presented-but-wrong-91c2d7e4"  # a client's key is a secret too
ES_PASSWORD = "es-pw-b8d3a1f6c0e94257"
ES_API_KEY = "ZXMtYXBpLWtleS1pZDplcy1hcGkta2V5LXNlY3JldC0zYTdm"
ES_SEARCH_KEY = "c2VhcmNoLWtleS1pZDpzZWFyY2gta2V5LXNlY3JldC04YjFj"  # search_api_key
# The password also travels as base64 in the Basic header: grep for that form too.
BASIC_HEADER = base64.b64encode(f"elastic:{ES_PASSWORD}".encode()).decode()
SECRETS = (SIDECAR_KEY, OTHER_KEY, ES_PASSWORD, ES_API_KEY, ES_SEARCH_KEY, BASIC_HEADER)
DEAD_ES = "http://127.0.0.1:9"


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def raw_settings(es_auth: dict[str, str]) -> dict[str, object]:
    return {
        "server": {"api_keys": [SIDECAR_KEY], "protect_metrics": True},
        "model": {"name": "fake-encoder"},
        "batching": {"probe_interval_seconds": 0.05},
        "elasticsearch": {"url": DEAD_ES, "request_timeout": 1, **es_auth},
        "follow": {"poll_interval": 0.05, "max_backoff": 0.1},
        "indices": [{"name": "docs", "dims": 32}],
    }


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "es_auth",
    [
        {"username": "elastic", "password": ES_PASSWORD},
        {"api_key": ES_API_KEY},
        {"username": "elastic", "password": ES_PASSWORD, "search_api_key": ES_SEARCH_KEY},
    ],
    ids=["basic", "api_key", "search_api_key"],
)
async def test_in_process_logs_errors_and_metrics_hold_no_secret(
    caplog: pytest.LogCaptureFixture, es_auth: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_from_dict(raw_settings(es_auth))
    said: list[str] = [repr(settings), str(settings), describe_client(settings.elasticsearch)]
    encoder = FakeEncoder()
    app = create_app(settings, encoder=encoder, follow=True)
    good = {"Authorization": f"Bearer {SIDECAR_KEY}"}
    async with TestClient(TestServer(app)) as c:
        presented: tuple[dict[str, str], ...] = (
            {},
            {"Authorization": f"Bearer {OTHER_KEY}"},
            {"Authorization": OTHER_KEY},
            {"Authorization": f"Basic {OTHER_KEY}"},
        )
        for headers in presented:
            resp = await c.post("/v1/embeddings", json={"input": "x"}, headers=headers)
            assert resp.status == 401
            said += [await resp.text(), str(dict(resp.headers))]
        resp = await c.post("/v1/embeddings", json={"input": "x"}, headers=good)
        assert resp.status == 200
        # Elasticsearch down: the search fails, the follower retries and logs.
        resp = await c.post("/v1/search", json={"index": "docs", "query": "x", "mode": "bm25"},
                            headers=good)  # fmt: skip
        assert resp.status >= 500
        said.append(await resp.text())
        # A model failure, to log and expose the error path too.
        encoder.failure = RuntimeError("simulated failure")
        resp = await c.post("/v1/embeddings", json={"input": "y"}, headers=good)
        assert resp.status == 503
        said.append(await resp.text())
        encoder.failure = None
        await asyncio.sleep(0.5)  # several follower retries against the dead node
        for path in ("/metrics", "/health", "/v1/models"):
            resp = await c.get(path, headers=good)
            said.append(await resp.text())
    assert "creating the state index failed" in caplog.text  # the follower did try
    said.append(caplog.text)
    said += [str(r.args) for r in caplog.records]
    assert leaks("\n".join(said)) == []


@pytest.mark.timeout(120)
def test_serve_debug_log_and_dev_console_hold_no_secret(
    tmp_path: Path, tiny_qwen_dir: Path
) -> None:
    config = tmp_path / "es-embed.yaml"
    raw = raw_settings({})
    raw["model"] = {"name": str(tiny_qwen_dir), "device": "cpu"}
    port = free_port()
    raw["server"] = {"port": port, "drain_seconds": 1}  # the keys come from the environment
    config.write_text(yaml.safe_dump(raw))
    env = sidecar_env(
        {
            "ES_EMBED_SERVER_API_KEYS": SIDECAR_KEY,
            "ES_EMBED_ELASTICSEARCH_USERNAME": "elastic",
            "ES_EMBED_ELASTICSEARCH_PASSWORD": ES_PASSWORD,
        }
    )
    sidecar = Sidecar(config, port, tmp_path / "serve.log", env=env, args=("--log-level", "debug"))
    said: list[str] = []
    sidecar.start()
    try:
        asyncio.run(sidecar.wait_healthy())
        status, body = sidecar.fetch("/v1/models", OTHER_KEY)
        assert status == 401
        said.append(body)
        status, body = sidecar.fetch("/metrics", SIDECAR_KEY)
        assert status == 200 and "es_embed_http_requests_total" in body
        said.append(body)
        sidecar.signal(signal.SIGTERM)
        assert asyncio.run(sidecar.wait_exit(20)) == 0
    finally:
        sidecar.kill()
    log = sidecar.log()
    assert "DEBUG" in log and "1 API key(s)" in log
    said.append(log)

    # The Kibana Dev Tools text of a search, with the ES API key in the environment.
    env = sidecar_env({"ES_EMBED_ELASTICSEARCH_API_KEY": ES_API_KEY})
    proc = subprocess.run(
        [sys.executable, "-m", "es_embed.cli", "search", "hello", "--index", "docs",
         "--config", str(config), "--dev-console"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (
        "GET docs/_msearch" in proc.stdout
        or "POST docs/_msearch" in proc.stdout
        or ("_search" in proc.stdout)
    ), proc.stdout
    said += [proc.stdout, proc.stderr]
    assert leaks("\n".join(said)) == []


def test_settings_repr_hides_secrets_from_the_environment() -> None:
    settings = load_settings(
        None,
        env={
            "ES_EMBED_SERVER_API_KEYS": SIDECAR_KEY,
            "ES_EMBED_ELASTICSEARCH_API_KEY": ES_API_KEY,
            "ES_EMBED_ELASTICSEARCH_PASSWORD": ES_PASSWORD,
            "ES_EMBED_ELASTICSEARCH_SEARCH_API_KEY": ES_SEARCH_KEY,
        },
    )
    assert settings.elasticsearch.password == ES_PASSWORD  # loaded, just never shown
    assert settings.elasticsearch.search_api_key == ES_SEARCH_KEY
    assert leaks(repr(settings)) == []
