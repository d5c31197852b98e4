"""One closed set of error kinds, named for what went wrong, not for a protocol.

Every layer (embed, follow, search, provision) raises these. The API owns the table from
kind to HTTP status and the OpenAI envelope (``api/errors.py``); the CLI owns the table
from kind to exit code (``cli/runtime.py``). Nothing below them knows either.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    INVALID_REQUEST = "invalid_request"  # the input is wrong: say which field
    UNAUTHORIZED = "unauthorized"  # no or wrong credentials
    NOT_FOUND = "not_found"  # an unknown model, index or route
    TOO_LARGE = "too_large"  # over a configured size limit
    UNPROCESSABLE = "unprocessable"  # valid, but this cluster or state cannot serve it
    OVERLOADED = "overloaded"  # a full queue: retry later
    UNAVAILABLE = "unavailable"  # the model or a dependency is down


class EmbedError(Exception):
    """An error with a kind, a message for humans, the offending field and a machine code."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> EmbedError:
    return EmbedError(ErrorKind.INVALID_REQUEST, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str = "not_found") -> EmbedError:
    return EmbedError(ErrorKind.NOT_FOUND, message, param=param, code=code)


def overloaded(lane: str, retry_after: float) -> EmbedError:
    return EmbedError(
        ErrorKind.OVERLOADED,
        f"the {lane} queue is full; retry after {retry_after:g} s",
        code="queue_full",
        retry_after=retry_after,
    )


def unavailable(reason: str) -> EmbedError:
    return EmbedError(ErrorKind.UNAVAILABLE, reason, code="model_unavailable")


def valid_unicode(text: str, param: str) -> str:
    """``text`` when it is valid Unicode; a lone surrogate (JSON allows ``"\\ud800"``) can be
    neither tokenised nor sent to Elasticsearch, so it is a 400 naming ``param``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid(
            f"{param} contains a lone surrogate (\\u{ord(text[exc.start]):04x} at character "
            f"{exc.start}), which is not valid Unicode text",
            param,
        ) from None
    return text
