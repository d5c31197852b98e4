"""docker-compose.yml (no Docker engine here): N sidecar replicas behind one nginx address,
each with its own replica id, read as YAML and checked against the settings it names."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from es_embed.config import settings_from_dict

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def sidecar_config(compose: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(compose["configs"]["es-embed-config"]["content"])
    return raw


def test_the_sidecar_scales_without_a_host_port(compose: dict[str, Any]) -> None:
    sidecar = compose["services"]["es-embed"]
    assert sidecar["deploy"]["replicas"] == "${ES_EMBED_REPLICAS:-1}"
    # A published host port would stop `--scale es-embed=2` (two containers, one port).
    assert "ports" not in sidecar and sidecar["expose"] == ["8080"]
    assert sidecar_config(compose)["server"]["port"] == 8080
    health = " ".join(sidecar["healthcheck"]["test"])
    assert "127.0.0.1:8080/health" in health


def test_each_replica_is_named_by_its_host_name(compose: dict[str, Any]) -> None:
    sidecar = compose["services"]["es-embed"]
    shell, flag, script = sidecar["entrypoint"]
    assert (shell, flag) == ("sh", "-c")
    # Compose turns $$ into $: the container's shell sees $(hostname).
    assign, *command = shlex.split(script.replace("$$", "$"))
    name, value = assign.split("=", 1)
    assert value == "$(hostname)"
    assert command == ["exec", "es-embed", "serve", "--config", "/etc/es-embed/es-embed.yaml"]
    mount = sidecar["configs"][0]
    assert mount == {"source": "es-embed-config", "target": "/etc/es-embed/es-embed.yaml"}
    # The variable is the one the settings read, and nothing in the file overrides it.
    settings = settings_from_dict(sidecar_config(compose), env={name: "es-embed-3f2a"})
    assert settings.follow.replica_id == "es-embed-3f2a"
    assert "replica_id" not in (sidecar_config(compose).get("follow") or {})


def test_one_address_balances_every_replica(compose: dict[str, Any]) -> None:
    balancer = compose["services"]["balancer"]
    assert balancer["ports"] == ["${ES_EMBED_PORT:-8080}:8080"]
    mount = balancer["configs"][0]
    assert mount["target"] == "/etc/nginx/conf.d/default.conf"
    nginx = compose["configs"][mount["source"]]["content"]
    # Docker's DNS, re-read every few seconds, so replicas added by --scale are found.
    assert re.search(r"resolver 127\.0\.0\.11 valid=\d+s", nginx)
    assert re.search(r"server es-embed:8080 resolve\b", nginx)
    assert "zone es_embed" in nginx  # `resolve` needs the upstream in shared memory
    assert "proxy_pass http://es_embed;" in nginx and "listen 8080;" in nginx
    retry = re.search(r"proxy_next_upstream ([^;]+);", nginx)
    assert retry is not None and {"error", "http_503", "non_idempotent"} <= set(retry[1].split())
    # No $ left for compose to interpolate into nothing: nginx variables are written $$.
    assert not re.search(r"(?<!\$)\$(?!\$)[a-z_]", nginx.replace("$$", ""))


def test_the_balancer_lets_the_sidecar_refuse_oversized_bodies(compose: dict[str, Any]) -> None:
    nginx = compose["configs"]["balancer-config"]["content"]
    found = re.search(r"client_max_body_size (\d+)m;", nginx)
    assert found is not None
    limit = settings_from_dict(sidecar_config(compose), env={}).server.max_body_bytes
    assert int(found[1]) * 1024 * 1024 > limit
