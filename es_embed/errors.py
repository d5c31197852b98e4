"""One closed set of error kinds. The API maps each kind to an HTTP status and the OpenAI
error envelope; the CLI maps any of them to a one-line message and exit code 2.

Every layer (embed, follow, search) raises these, so nothing below the API knows HTTP.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    # value: (HTTP status, OpenAI error "type")
    INVALID_REQUEST = (400, "invalid_request_error")
    UNAUTHORIZED = (401, "authentication_error")
    NOT_FOUND = (404, "not_found_error")
    TOO_LARGE = (413, "invalid_request_error")
    UNPROCESSABLE = (422, "invalid_request_error")
    OVERLOADED = (429, "rate_limit_error")
    UNAVAILABLE = (503, "service_unavailable")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def type_name(self) -> str:
        return self.value[1]


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

    def envelope(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind.type_name,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> EmbedError:
    return EmbedError(ErrorKind.INVALID_REQUEST, message, param=param, code=code)


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
