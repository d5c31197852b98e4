"""Build the one ``AsyncElasticsearch`` client of a process from the settings.

Secrets (API key, password) go straight into the client and are never logged; the
description returned by ``describe_client`` names only the URL and the kind of auth.
"""

from __future__ import annotations

import ssl
from typing import Any

from elasticsearch import AsyncElasticsearch

from es_embed.config import ConfigError, ElasticsearchSettings
from es_embed.config_checks import split_urls, url_problem


def client_kwargs(s: ElasticsearchSettings) -> dict[str, Any]:
    hosts = split_urls(s.url)
    # Checked at load time too; again here for settings built in code.
    for url in hosts or [""]:
        if problem := url_problem(url):
            raise ConfigError(f"elasticsearch.url: {problem}")
    kwargs: dict[str, Any] = {
        "hosts": hosts,
        "request_timeout": s.request_timeout,
        # Retries are ours (with backoff, in the follower and the loader), not the client's.
        "max_retries": 0,
        "retry_on_timeout": False,
    }
    if s.api_key and (s.username or s.password):
        raise ConfigError("elasticsearch: set either api_key or username/password, not both")
    if s.api_key:
        kwargs["api_key"] = s.api_key
    elif s.username or s.password:
        if not (s.username and s.password):
            raise ConfigError("elasticsearch: basic auth needs both username and password")
        kwargs["basic_auth"] = (s.username, s.password)
    if s.ca_certs:
        kwargs["ca_certs"] = s.ca_certs
    if s.ssl_assert_fingerprint:
        kwargs["ssl_assert_fingerprint"] = s.ssl_assert_fingerprint
    if any(h.startswith("https") for h in hosts):
        kwargs["verify_certs"] = s.verify_certs
    return kwargs


def build_client(s: ElasticsearchSettings) -> AsyncElasticsearch:
    try:
        return AsyncElasticsearch(**client_kwargs(s))
    except ssl.SSLError as exc:  # the TLS context is built here: a file that is not a PEM
        raise ConfigError(f"elasticsearch.ca_certs: {s.ca_certs!r}: {exc.reason or exc}") from None
    except ValueError as exc:  # what the client refuses that our checks let through
        raise ConfigError(f"elasticsearch: {exc}") from None


def describe_client(s: ElasticsearchSettings) -> str:
    """A log-safe one-liner: URLs and the kind of auth, never the secret itself."""
    auth = "api key" if s.api_key else f"basic auth as {s.username}" if s.username else "no auth"
    return f"{s.url} ({auth})"
