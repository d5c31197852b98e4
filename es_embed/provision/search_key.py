"""``es-embed setup --search-key``: an Elasticsearch API key that can only read the
configured indices, for ``/v1/search`` (``elasticsearch.search_api_key``).

With it, Elasticsearch itself holds the search boundary: a query that tries to read any
other index (a lookup, a cross-index search) is refused by the cluster, whatever the
sidecar's own check lets through. The key is created with the setup credentials (they need
the ``manage_own_api_key`` cluster privilege); Elasticsearch limits a key to the
intersection of its role and its creator's privileges, so it can never read more than
``read`` on these names. The encoded key is a secret: it is returned to the caller to print
once, and never logged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from elasticsearch import ApiError, AsyncElasticsearch

from es_embed.errors import EmbedError, ErrorKind
from es_embed.provision.templates import Request

KEY_NAME = "es-embed-search"


@dataclass(frozen=True)
class SearchKey:
    id: str
    name: str
    indices: tuple[str, ...]
    encoded: str = field(repr=False)  # the secret: id and key, base64, as clients send it


def search_key_request(indices: Sequence[str]) -> Request:
    """``POST _security/api_key`` with one role: ``read`` on exactly these names."""
    return Request(
        "POST",
        "_security/api_key",
        {
            "name": KEY_NAME,
            "role_descriptors": {
                KEY_NAME: {
                    "cluster": [],
                    "indices": [
                        {
                            "names": list(indices),
                            "privileges": ["read"],
                            "allow_restricted_indices": False,
                        }
                    ],
                }
            },
            "metadata": {"application": "es-embed", "purpose": "search"},
        },
    )


async def create_search_key(es: AsyncElasticsearch, indices: Sequence[str]) -> SearchKey:
    body = search_key_request(indices).body
    try:
        resp = await es.security.create_api_key(
            name=body["name"], role_descriptors=body["role_descriptors"], metadata=body["metadata"]
        )
    except ApiError as exc:
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        why = error.get("reason") if isinstance(error, dict) else None
        raise EmbedError(
            ErrorKind.UNPROCESSABLE,
            f"cannot create the search API key ({exc.meta.status}: {why or exc.message}); it needs "
            "security enabled on the cluster and the manage_own_api_key cluster privilege "
            "for the credentials setup runs with",
            param="search_key",
            code="search_key_unavailable",
        ) from None
    return SearchKey(str(resp["id"]), str(resp["name"]), tuple(indices), str(resp["encoded"]))
