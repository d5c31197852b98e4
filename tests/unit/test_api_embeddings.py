"""POST /v1/embeddings through the real app with the fake encoder: answers and every bad input."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from tests.api_support import Client, api_client, error_of, make_settings
from tests.fakes import FakeEncoder

HIDDEN = 64


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    settings = make_settings(model={"aliases": ["text-embedding-3-small"]})
    async with api_client(settings, FakeEncoder(hidden_size=HIDDEN, max_length=8)) as c:
        yield c


def expected(texts: list[str], dims: int = HIDDEN) -> np.ndarray:
    """What the service must return: the encoder's vectors, cut to dims, renormalised."""
    enc = FakeEncoder(hidden_size=HIDDEN, max_length=8)
    full = enc.forward(enc.tokenize(texts))[:, :dims]
    return full / np.linalg.norm(full, axis=1, keepdims=True)


async def test_float_answer_has_the_openai_shape(client: Client) -> None:
    texts = ["first text", "a second, longer text"]
    resp = await client.post("/v1/embeddings", json={"input": texts, "model": "fake-encoder"})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["object"] == "list" and body["model"] == "fake-encoder"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected(texts), atol=1e-6)
    # FakeEncoder: one token per word plus end-of-text.
    assert body["usage"] == {"prompt_tokens": 3 + 5, "total_tokens": 3 + 5}


async def test_base64_is_little_endian_float32_of_the_same_vector(client: Client) -> None:
    resp = await client.post(
        "/v1/embeddings",
        json={"input": "hello world", "encoding_format": "base64", "dimensions": 32},
    )
    body = await resp.json()
    assert resp.status == 200, body
    raw = base64.b64decode(body["data"][0]["embedding"])
    vector = np.frombuffer(raw, dtype="<f4")
    assert vector.shape == (32,)
    np.testing.assert_allclose(vector, expected(["hello world"], 32)[0], atol=1e-6)
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5


async def test_alias_and_missing_model_are_served(client: Client) -> None:
    for body in ({"input": "x", "model": "text-embedding-3-small"}, {"input": "x"}):
        resp = await client.post("/v1/embeddings", json=body)
        assert resp.status == 200
        assert (await resp.json())["model"] == "fake-encoder"


async def test_query_input_type_and_instruction_change_the_vector(client: Client) -> None:
    async def vector(extra: dict[str, Any]) -> np.ndarray:
        resp = await client.post("/v1/embeddings", json={"input": "capital of france", **extra})
        assert resp.status == 200, await resp.text()
        return np.array((await resp.json())["data"][0]["embedding"])

    doc = await vector({})
    query = await vector({"input_type": "query"})
    custom = await vector({"input_type": "query", "instruction": "Find the city"})
    # FakeEncoder is mean-pooled without a prompt, so only an explicit instruction changes it.
    np.testing.assert_allclose(doc, query, atol=1e-6)
    assert float(doc @ custom) < 0.999


async def test_user_field_is_accepted_and_ignored(client: Client) -> None:
    resp = await client.post("/v1/embeddings", json={"input": "x", "user": "someone"})
    assert resp.status == 200


async def test_control_characters_and_nul_are_text(client: Client) -> None:
    resp = await client.post("/v1/embeddings", json={"input": ["tab\there", "nul\u0000byte\x07"]})
    assert resp.status == 200, await resp.text()
    assert len((await resp.json())["data"]) == 2


@pytest.mark.parametrize("text", ["", " ", "\t\n", "\x00", "\u3000", "\xa0x", "a", " a "])
async def test_blank_input_rule_is_the_followers(client: Client, text: str) -> None:
    # One rule for "no text": what the follower would not embed, the API refuses, and the
    # other way round (U+3000 and NBSP are text to both: is_blank follows Java's trim()).
    from es_embed.indices.document import document_text

    follower_embeds = document_text({"f": text}, ["f"]) != ""
    resp = await client.post("/v1/embeddings", json={"input": ["ok", text]})
    assert (resp.status == 200) == follower_embeds, (text, await resp.text())
    if not follower_embeds:
        assert (await error_of(resp, 400))["param"] == "input[1]"


async def test_truncation_is_reported_in_usage(client: Client) -> None:
    long_text = " ".join(f"word{i}" for i in range(20))  # 21 tokens > max_length 8
    resp = await client.post("/v1/embeddings", json={"input": [long_text, "short"]})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["usage"]["truncated_inputs"] == 1
    assert body["usage"]["prompt_tokens"] == 8 + 2


# (body, status, param, words the message must contain)
BAD_INPUTS: list[tuple[Any, int, str | None, tuple[str, ...]]] = [
    ({}, 400, "input", ("required",)),
    ({"input": ""}, 400, "input", ("empty",)),
    ({"input": []}, 400, "input", ("empty list",)),
    ({"input": ["ok", "", "ok"]}, 400, "input[1]", ("input[1]", "empty")),
    ({"input": "   "}, 400, "input", ("input is empty or whitespace-only",)),
    ({"input": ["ok", " \t\r\n"]}, 400, "input[1]", ("input[1]", "whitespace-only")),
    ({"input": ["ok", "\u0000\u0007 "]}, 400, "input[1]", ("whitespace-only",)),
    ({"input": ["a", "b", "c", 7]}, 400, "input[3]", ("input[3]", "string", "number")),
    ({"input": ["a", None]}, 400, "input[1]", ("string", "null")),
    ({"input": 42}, 400, "input", ("string or a list of strings", "number")),
    ({"input": {"text": "x"}}, 400, "input", ("object",)),
    ({"input": [101, 2023, 102]}, 400, "input", ("token ids", "text only")),
    ({"input": [[101, 2023], [102]]}, 400, "input", ("token ids",)),
    ({"input": "x\ud800y"}, 400, "input", ("surrogate",)),
    ({"input": "x", "model": "gpt-4"}, 404, "model", ("'gpt-4'", "fake-encoder")),
    ({"input": "x", "model": 3}, 400, "model", ("string",)),
    ({"input": "x", "dimensions": 8}, 400, "dimensions", ("between 32 and 64", "got 8")),
    ({"input": "x", "dimensions": 65}, 400, "dimensions", ("between 32 and 64",)),
    ({"input": "x", "dimensions": "64"}, 400, "dimensions", ("integer", "string")),
    ({"input": "x", "dimensions": True}, 400, "dimensions", ("integer", "boolean")),
    ({"input": "x", "dimensions": 40.5}, 400, "dimensions", ("integer",)),
    ({"input": "x", "encoding_format": "int8"}, 400, "encoding_format", ("float, base64",)),
    ({"input": "x", "input_type": "passage"}, 400, "input_type", ("query, document",)),
    ({"input": "x", "instruction": "Find"}, 400, "instruction", ("input_type",)),
    ({"input": "x", "input_type": "query", "instruction": " "}, 400, "instruction", ("non-empty",)),
    ({"input": "x", "dimension": 32}, 400, "dimension", ("unknown field", "'dimension'")),
    (["x"], 400, None, ("JSON object", "array")),
    ({"input": ["x"] * 5}, 413, "input", ("5 items", "server.max_inputs (4)")),
]


@pytest.mark.parametrize(("body", "status", "param", "words"), BAD_INPUTS)
async def test_bad_input_is_refused_naming_the_field(
    body: Any, status: int, param: str | None, words: tuple[str, ...]
) -> None:
    settings = make_settings(server={"max_inputs": 4})
    async with api_client(settings) as c:
        error = await error_of(await c.post("/v1/embeddings", json=body), status)
    assert error["param"] == param
    for word in words:
        assert word in error["message"], (word, error["message"])
    expected_type = {
        400: "invalid_request_error",
        404: "not_found_error",
        413: "invalid_request_error",
    }
    assert error["type"] == expected_type[status]


# Raw bodies that never become JSON.
BAD_BODIES: list[tuple[bytes, tuple[str, ...]]] = [
    (b'{"input": "x"', ("not valid JSON", "line 1")),
    (b"", ("not valid JSON",)),
    (b'{"input": "caf\xe9"}', ("not valid UTF-8", "byte 14", "0xe9")),
    (b"\xff\xfe{}", ("not valid UTF-8", "byte 0")),
    (b"{'input': 'x'}", ("not valid JSON",)),
]


@pytest.mark.parametrize(("raw", "words"), BAD_BODIES)
async def test_malformed_bodies_are_400(client: Client, raw: bytes, words: tuple[str, ...]) -> None:
    resp = await client.post(
        "/v1/embeddings", data=raw, headers={"Content-Type": "application/json"}
    )
    error = await error_of(resp, 400)
    assert error["code"] == "invalid_json"
    for word in words:
        assert word in error["message"], (word, error["message"])


async def test_body_over_the_limit_is_413_in_the_envelope() -> None:
    async with api_client(make_settings(server={"max_body_bytes": 1000})) as c:
        resp = await c.post("/v1/embeddings", json={"input": "word " * 400})
        error = await error_of(resp, 413)
        assert "server.max_body_bytes (1,000 bytes)" in error["message"]
        assert error["code"] == "body_too_large"
        assert (await c.post("/v1/embeddings", json={"input": "small"})).status == 200


async def test_input_too_long_under_truncation_error_is_400_naming_the_input() -> None:
    settings = make_settings(model={"truncation": "error"})
    async with api_client(settings, FakeEncoder(max_length=4)) as c:
        resp = await c.post("/v1/embeddings", json={"input": ["short", "one two three four five"]})
        error = await error_of(resp, 400)
    assert error["param"] == "input[1]" and "6 tokens" in error["message"]
    assert error["code"] == "input_too_long"


async def test_unknown_route_and_wrong_method_use_the_envelope(client: Client) -> None:
    error = await error_of(await client.get("/v1/nothing"), 404)
    assert error["code"] == "route_not_found" and "/v1/nothing" in error["message"]
    resp = await client.get("/v1/embeddings")
    error = await error_of(resp, 405)
    assert "POST" in error["message"] and resp.headers["Allow"] == "POST"


async def test_model_failure_is_503_then_recovers() -> None:
    encoder = FakeEncoder()
    settings = make_settings(batching={"probe_interval_seconds": 0.05})
    async with api_client(settings, encoder) as c:
        encoder.failure = RuntimeError("CUDA error: device-side assert")
        error = await error_of(await c.post("/v1/embeddings", json={"input": "x"}), 503)
        assert "device-side assert" in error["message"]
        health = await c.get("/health")
        assert health.status == 503 and (await health.json())["status"] == "unhealthy"
        encoder.failure = None
        for _ in range(200):
            if (await c.get("/health")).status == 200:
                break
            await asyncio.sleep(0.02)
        assert (await c.post("/v1/embeddings", json={"input": "x"})).status == 200


async def test_full_queue_is_429_with_retry_after() -> None:
    # One input per forward pass, each ~0.4 s: the bulk lane (2 slots) stays occupied.
    encoder = FakeEncoder(seconds_per_token=0.2)
    settings = make_settings(
        batching={"bulk_queue": 2, "max_batch_size": 1, "retry_after_seconds": 3}
    )
    async with api_client(settings, encoder) as c:
        first = asyncio.create_task(c.post("/v1/embeddings", json={"input": ["a", "b", "c"]}))
        for _ in range(500):
            metrics = await (await c.get("/metrics")).text()
            depth = re.search(r'es_embed_queue_depth\{lane="bulk"\} (\d+)', metrics)
            if depth and int(depth.group(1)) > 0:
                break
            await asyncio.sleep(0.01)
        resp = await c.post("/v1/embeddings", json={"input": ["d", "e"]})
        error = await error_of(resp, 429)
        assert resp.headers["Retry-After"] == "3"
        assert error["type"] == "rate_limit_error" and "bulk queue is full" in error["message"]
        assert (await first).status == 200
