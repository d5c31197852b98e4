"""Property-based fuzzing of the HTTP API (issue 14): request bodies that are arbitrary JSON,
raw bytes, or valid bodies with one field replaced, added or dropped, sent to the in-process
app. The only property: the answer is 2xx, or 4xx in the OpenAI envelope; never a 5xx, never
invalid JSON (NaN, Infinity), never a logged traceback.

Hypothesis profiles: ``ci`` (the default: 200 examples per test, no deadline, no example
database on disk) and ``dev`` (1,000); pick one with ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from es_embed.api.app import create_app
from es_embed.config import Settings
from tests.fakes import FakeEncoder, FakeReranker

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", parent=settings.get_profile("ci"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# JSON texts Python's json module reads but no handler can use, and deep nesting.
RAW_VALUES = (
    "9" * 5000, "-" + "1" * 25, "12345678901234567890", "1e999", "-1e400", "NaN", "Infinity",
    "-Infinity", "1.7e308", "5e-324", '"\\ud800"', '"a\\udfffb"', '"\\u0000"', '""', "[]", "{}",
    "[" * 3000 + "]" * 3000, '{"a":' * 3000 + "1" + "}" * 3000, "[" * 129 + "]" * 129,
)  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["\ud800", "x\udc00y", "", " ", "fake-encoder", "query", "bm25", "rrf"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=16,
)
raw_values = st.one_of(
    json_values.map(lambda v: json.dumps(v)),  # allow_nan: NaN and Infinity go out as is
    st.sampled_from(RAW_VALUES),
)


def with_field(base: Mapping[str, Any], key: str, raw: str | None) -> str:
    """``base`` as JSON text with ``key`` set to the raw JSON text ``raw`` (None: dropped)."""
    parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in base.items() if k != key]
    if raw is not None:
        parts.append(f"{json.dumps(key)}: {raw}")
    return "{" + ", ".join(parts) + "}"


def bodies(valid: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> st.SearchStrategy[bytes]:
    """Raw bytes, arbitrary JSON, and valid bodies with one field replaced/added/dropped."""
    mutated = st.builds(
        with_field,
        st.sampled_from(list(valid)),
        st.sampled_from(list(fields)) | st.text(max_size=8),
        st.none() | raw_values,
    )
    return st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        mutated.map(str.encode),
        st.sampled_from(list(valid)).map(lambda v: json.dumps(v).encode()),
    )


def _no_constants(name: str) -> Any:
    raise AssertionError(f"the answer holds {name}, which is not JSON")


def check_answer(status: int, text: str) -> None:
    """The one property: 2xx, or 4xx with the envelope; strict JSON either way."""
    assert 200 <= status < 300 or 400 <= status < 500, (status, text[:500])
    body = json.loads(text, parse_constant=_no_constants)
    if status >= 400:
        assert isinstance(body, dict) and set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"], error


class AppRunner:
    """The real app (fake encoder) on its own event loop, called from synchronous code: a
    Hypothesis test runs each example as a plain function call."""

    def __init__(
        self,
        app_settings: Settings,
        encoder: FakeEncoder | None = None,
        reranker: FakeReranker | None = None,
    ) -> None:
        self._settings = app_settings
        self._encoder = encoder or FakeEncoder()
        self._reranker = reranker
        self._loop = asyncio.new_event_loop()
        self._client: TestClient[Any, Any] | None = None

    def __enter__(self) -> AppRunner:
        async def start() -> TestClient[Any, Any]:
            app = create_app(self._settings, encoder=self._encoder, reranker=self._reranker)
            client: TestClient[Any, Any] = TestClient(TestServer(app))
            await client.start_server()
            return client

        self._client = self._loop.run_until_complete(start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            self._loop.run_until_complete(self._client.close())
        self._loop.close()

    def post(self, path: str, data: bytes) -> tuple[int, str]:
        client = self._client
        assert client is not None

        async def send() -> tuple[int, str]:
            headers = {"content-type": "application/json"}
            async with client.post(path, data=data, headers=headers) as resp:
                return resp.status, await resp.text()

        return self._loop.run_until_complete(send())
