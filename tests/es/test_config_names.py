"""The index-name rule of the settings against the real node: every name the settings accept,
Elasticsearch accepts too, and every name Elasticsearch refuses, the settings refuse first (at
load time, one line, instead of a failing setup or follower). The settings are stricter on
purpose: hidden (``.x``) names are refused although Elasticsearch still creates them."""

from __future__ import annotations

import uuid
import warnings

import pytest
from elasticsearch import ApiError, Elasticsearch

from es_embed.config_checks import index_name_problem

pytestmark = pytest.mark.es

SUFFIX = uuid.uuid4().hex[:8]
NAMES = [
    f"docs-{SUFFIX}",
    f"logs-app.prod_2024-{SUFFIX}",
    f"docs@2024~{SUFFIX}",
    f"日本語-{SUFFIX}",
    f"{SUFFIX}" + "a" * (255 - len(SUFFIX)),
    f"{SUFFIX}" + "a" * (256 - len(SUFFIX)),
    f"*{SUFFIX}",
    f"{SUFFIX}?",
    f"a,{SUFFIX}",
    f"my {SUFFIX}",
    f'a"{SUFFIX}',
    f"a#{SUFFIX}",
    f"a\\{SUFFIX}",
    f"a|{SUFFIX}",
    f"a<{SUFFIX}>",
    f"remote:{SUFFIX}",
    f"_{SUFFIX}",
    f"-{SUFFIX}",
    f"+{SUFFIX}",
    f"Docs{SUFFIX}",
    f".{SUFFIX}",
    "..",
]


@pytest.mark.parametrize("name", NAMES)
def test_settings_never_accept_a_name_elasticsearch_refuses(name: str, es: Elasticsearch) -> None:
    ours = index_name_problem(name) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a dot-prefixed name is created with a warning
        try:
            es.indices.create(index=name)
        except ApiError as exc:
            assert exc.meta.status == 400, exc  # refused as a bad name, not for another reason
            theirs = False
        else:
            theirs = True
            # Only what was created: a refused "a,x" or "*x" would delete other indices.
            es.indices.delete(index=name)
    if ours:
        assert theirs, f"the settings accept {name!r}, Elasticsearch refuses it"
    if not theirs:
        assert not ours
