"""Optional bearer-key access control.

Keys come from ``server.api_keys`` (normally the ES_EMBED_SERVER_API_KEYS environment
variable) and ``server.api_keys_file``, never from the command line (it shows in ``ps``).
The presented key is compared with every accepted key in constant time, and no comparison
stops early, so timing reveals neither a key nor which key matched. No key, presented or
accepted, is ever logged or echoed in an error.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from es_embed.errors import EmbedError, ErrorKind

OPEN_PATHS = {"/health": "protect_health", "/metrics": "protect_metrics"}


def key_matches(presented: str, accepted: Iterable[bytes]) -> bool:
    given = presented.encode("utf-8", "surrogateescape")
    found = False
    for key in accepted:
        found |= hmac.compare_digest(given, key)
    return found


def unauthorized(message: str) -> EmbedError:
    return EmbedError(ErrorKind.UNAUTHORIZED, message, code="invalid_api_key")


def bearer_middleware(
    keys: frozenset[str], *, protect_health: bool, protect_metrics: bool
) -> Middleware:
    """A middleware that demands ``Authorization: Bearer <key>`` on every protected path."""
    accepted = tuple(k.encode("utf-8") for k in sorted(keys))
    open_paths = {
        path
        for path, flag in OPEN_PATHS.items()
        if not {"protect_health": protect_health, "protect_metrics": protect_metrics}[flag]
    }

    @web.middleware
    async def check_bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise unauthorized("this server requires an API key: send Authorization: Bearer <key>")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("the Authorization header must be 'Bearer <key>'")
        if not key_matches(token.strip(), accepted):
            raise unauthorized("the API key is not valid")
        return await handler(request)

    return check_bearer
