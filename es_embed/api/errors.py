"""One middleware turns every failure into the OpenAI error envelope.

``EmbedError`` carries a plain ``ErrorKind``; ``STATUS`` below is the one table from kind to
HTTP status and OpenAI error type, and ``envelope`` the one envelope. aiohttp's
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

# kind -> (HTTP status, OpenAI error "type")
STATUS: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorKind.UNAUTHORIZED: (401, "authentication_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.TOO_LARGE: (413, "invalid_request_error"),
    ErrorKind.UNPROCESSABLE: (422, "invalid_request_error"),
    ErrorKind.OVERLOADED: (429, "rate_limit_error"),
    ErrorKind.UNAVAILABLE: (503, "service_unavailable"),
}

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
    status, type_name = STATUS[exc.kind]
    body = envelope(exc.message, type_name, exc.code, exc.param)
    return web.json_response(body, status=status, headers=headers)


def envelope(
    message: str, type_name: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope, the only error body this API sends."""
    return {"error": {"message": message, "type": type_name, "param": param, "code": code}}


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
    type_name = STATUS[kind][1] if kind else "invalid_request_error"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return web.json_response(envelope(message, type_name, code), status=exc.status, headers=headers)


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
            envelope("internal server error; see the server log", "server_error", "internal"),
            status=500,
        )
