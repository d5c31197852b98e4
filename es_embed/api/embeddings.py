"""``POST /v1/embeddings``, OpenAI-compatible, plus two extensions.

Request fields: ``input`` (a string or a list of strings), ``model`` (the served id or a
configured alias; may be left out), ``dimensions``, ``encoding_format`` (``float`` or
``base64``: little-endian float32, as OpenAI sends), ``user`` (accepted and ignored, as the
OpenAI clients send it), and the extensions ``input_type`` (``query`` | ``document``, default
``document``) and ``instruction`` (a query task replacing the configured one).
Any other field is a 400 naming it, so a misspelt option is never silently ignored.

Text policy: every Unicode string is text, control characters and NUL included (they are
valid JSON, tokenizers map them like any character, and refusing them would break documents
pasted from PDFs). Refused: empty and blank strings (every character a space or control
character, ``indices.document.is_blank``: the follower treats such a field as no text, and
OpenAI answers 400 for ""), lone surrogates (``"\\ud800"``: not encodable, a tokenizer
would fail on them), token-id arrays (this server embeds text only).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import web

from es_embed import strict_json
from es_embed.api.keys import SERVICE, SETTINGS
from es_embed.config import ModelSettings
from es_embed.embed.protocol import InputType
from es_embed.errors import EmbedError, ErrorKind, invalid, valid_unicode
from es_embed.indices.document import is_blank

FIELDS = ("input", "model", "dimensions", "encoding_format", "user", "input_type", "instruction")
ENCODINGS = ("float", "base64")
INPUT_TYPES = ("query", "document")


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: list[str]
    dimensions: int | None
    encoding_format: str
    input_type: InputType
    instruction: str | None


async def read_json(request: web.Request) -> Any:
    """The body as JSON; 413 past client_max_size (raised by aiohttp), 400 for bad bytes,
    bad JSON, or JSON no handler can use (``strict_json``), naming the field."""
    body = await request.read()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(
            f"the request body is not valid UTF-8 (byte {exc.start}: {body[exc.start]:#04x})",
            code="invalid_json",
        ) from None
    # Bounded: depth, number size, finite floats, valid Unicode; errors name the field.
    return strict_json.parse(text)


def type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number" if isinstance(value, int | float) else "value")


def check_text(text: str, param: str) -> str:
    if not text:
        raise invalid(f"{param} is an empty string; every input needs some text", param)
    if is_blank(text):
        raise invalid(
            f"{param} is empty or whitespace-only; every input needs some text "
            "(a document with no text gets no vector either)",
            param,
        )
    return valid_unicode(text, param)


def parse_input(value: Any, max_inputs: int) -> list[str]:
    token_ids = (
        "input looks like token ids; this server embeds text only: send a string or a list "
        "of strings"
    )
    if isinstance(value, str):
        return [check_text(value, "input")]
    check_list(value, "input", max_inputs, "a string or a list of strings", "one string")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value) or all(
        isinstance(v, list) for v in value
    ):
        raise invalid(token_ids, "input", code="token_ids_unsupported")
    texts = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise invalid(f"input[{i}] must be a string, got {type_name(item)}", f"input[{i}]")
        texts.append(check_text(item, f"input[{i}]"))
    return texts


def check_list(value: Any, param: str, max_inputs: int, expected: str, least: str) -> None:
    """A non-empty list of at most ``server.max_inputs`` items (413 above)."""
    if not isinstance(value, list):
        raise invalid(f"{param} must be {expected}, got {type_name(value)}", param)
    if not value:
        raise invalid(f"{param} is an empty list; send at least {least}", param)
    if len(value) > max_inputs:
        raise too_many(param, len(value), max_inputs)


def too_many(param: str, n: int, max_inputs: int) -> EmbedError:
    return EmbedError(
        ErrorKind.TOO_LARGE,
        f"{param} has {n:,} items, more than server.max_inputs ({max_inputs:,}) per "
        "request; split it into several requests",
        param=param,
        code="too_many_inputs",
    )


def check_model(value: Any, served: tuple[str, ...]) -> None:
    """404 unless ``value`` (when given) is one of the ``served`` names of the route's model."""
    if value is None:
        return  # no model named: the one this server serves
    if not isinstance(value, str):
        raise invalid(f"model must be a string, got {type_name(value)}", "model")
    names = dict.fromkeys(served)
    if value not in names:
        known = ", ".join(names)
        raise EmbedError(
            ErrorKind.NOT_FOUND,
            f"model {value!r} is not served here (available: {known})",
            param="model",
            code="model_not_found",
        )


def check_fields(body: Any, fields: tuple[str, ...]) -> None:
    """The body is a JSON object of known fields: a misspelt option is never ignored."""
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, got {type_name(body)}")
    for name in body:
        if name not in fields:
            raise invalid(
                f"unknown field {name!r}; accepted fields: {', '.join(fields)}",
                name,
                "unknown_field",
            )


def _choice(body: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if value not in choices:
        raise invalid(f"{name} must be one of {', '.join(choices)}, got {value!r}", name)
    return str(value)


def parse_request(
    body: Any, model: ModelSettings, served: str, max_inputs: int
) -> EmbeddingRequest:
    check_fields(body, FIELDS)
    if "input" not in body:
        raise invalid("input is required: a string or a list of strings", "input", "missing")
    check_model(body.get("model"), (served, model.model_id, *model.aliases))
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int)):
        raise invalid(f"dimensions must be an integer, got {type_name(dims)}", "dimensions")
    input_type = _choice(body, "input_type", INPUT_TYPES, "document")
    instruction = body.get("instruction")
    if check_instruction(instruction) is not None:
        if input_type != "query":
            raise invalid(
                "instruction applies to queries only: set input_type to query", "instruction"
            )
    return EmbeddingRequest(
        texts=parse_input(body["input"], max_inputs),
        dimensions=dims,
        encoding_format=_choice(body, "encoding_format", ENCODINGS, "float"),
        input_type="query" if input_type == "query" else "document",
        instruction=instruction,
    )


def check_instruction(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid("instruction must be a non-empty string", "instruction")
    return valid_unicode(value, "instruction")


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4", copy=False).tobytes()).decode("ascii")
    return vector.tolist()


async def post_embeddings(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    service = request.app[SERVICE]
    served = service.info.model_id
    req = parse_request(
        await read_json(request), settings.model, served, settings.server.max_inputs
    )
    service.check_dims(req.dimensions)  # before queueing: a bad value never waits for a slot
    result = await service.embed(
        req.texts, input_type=req.input_type, dims=req.dimensions, instruction=req.instruction
    )
    usage: dict[str, int] = {
        "prompt_tokens": result.prompt_tokens,
        "total_tokens": result.prompt_tokens,
    }
    if result.truncated:
        usage["truncated_inputs"] = result.truncated
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(v, req.encoding_format)}
        for i, v in enumerate(result.vectors)
    ]
    return web.json_response({"object": "list", "data": data, "model": served, "usage": usage})
