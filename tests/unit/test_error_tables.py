"""Error kinds are plain names; the API and the CLI each own one complete table for them."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

import pytest

from es_embed.api.errors import STATUS, envelope
from es_embed.cli.runtime import EXIT_CODES, report
from es_embed.config import ConfigError
from es_embed.errors import EmbedError, ErrorKind, invalid


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_every_kind_has_an_http_status_and_an_exit_code(kind: ErrorKind) -> None:
    status, type_name = STATUS[kind]
    assert 400 <= status < 600
    assert type_name.endswith("_error") or type_name == "service_unavailable"
    assert EXIT_CODES[kind] in (1, 2)


def test_kinds_know_nothing_of_http() -> None:
    assert all(isinstance(kind.value, str) for kind in ErrorKind)
    assert not hasattr(EmbedError(ErrorKind.NOT_FOUND, "x"), "envelope")


def test_the_one_envelope() -> None:
    assert envelope("bad", "invalid_request_error", "invalid_value", "input[3]") == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "input[3]",
            "code": "invalid_value",
        }
    }


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (invalid("dims must be an integer", "dims"), 2),
        (ConfigError("elasticsearch.url: bad"), 2),
        (EmbedError(ErrorKind.UNAVAILABLE, "the model is down"), 1),
        (EmbedError(ErrorKind.OVERLOADED, "queue full"), 1),
    ],
)
def test_cli_reports_one_line_with_the_kinds_exit_code(
    exc: ConfigError | EmbedError, code: int
) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        assert report(exc) == code
    assert err.getvalue() == f"error: {exc}\n"
