"""One middleware turns every failure into the OpenAI error envelope.

``EmbedError`` carries its ``ErrorKind`` (status + OpenAI type) from es_embed.errors; aiohttp's
own refusals (unknown route, wrong method, body over ``client_max_size``) are mapped onto the
same table, so a client never sees an HTML page or a bare text body. Anything unexpected is a
500 whose message says nothing about the cause (it may hold secrets); the log has the traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from es_embed.api.keys import SETTINGS
from es_embed.errors import EmbedError, ErrorKind

log = logging.getLogger(__name__)

# aiohttp's HTTPExceptions -> (kind, code). Statuses outside the table keep their own status.
_HTTP_CODES: dict[int, tuple[ErrorKind | None, str]] = {
    400: (ErrorKind.INVALID_REQUEST, "bad_request"),
    404: (ErrorKind.NOT_FOUND, "route_not_found"),
    405: (None, "method_not_allowed"),
    413: (ErrorKind.TOO_LARGE, "body_too_large"),
}


def error_response(exc: EmbedError) -> web.Response:
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        # Retry-After takes whole seconds; never 0, or clients retry in a tight loop.
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.kind is ErrorKind.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="es-embed"'
    return web.json_response(exc.envelope(), status=exc.kind.status, headers=headers)


def _envelope(message: str, type_name: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_name, "param": None, "code": code}}


def http_error_response(exc: web.HTTPException, request: web.Request) -> web.Response:
    kind, code = _HTTP_CODES.get(exc.status, (None, "http_error"))
    if exc.status == 404:
        message = f"no such endpoint: {request.path}"
    elif exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
    elif exc.status == 413:
        limit = request.app[SETTINGS].server.max_body_bytes
        message = f"the request body is larger than server.max_body_bytes ({limit:,} bytes)"
    else:
        message = exc.text or exc.reason
    type_name = kind.type_name if kind else "invalid_request_error"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return web.json_response(
        _envelope(message, type_name, code), status=exc.status, headers=headers
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except EmbedError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not errors
            raise
        return http_error_response(exc, request)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return web.json_response(
            _envelope("internal server error; see the server log", "server_error", "internal"),
            status=500,
        )
