"""The official ``openai`` client against es-embed: in-process (fake encoder) and against a
real ``es-embed serve`` subprocess with MiniLM on a loopback port."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from openai import AsyncOpenAI, AuthenticationError, NotFoundError, OpenAI

from tests.api_support import api_client, make_settings
from tests.fakes import FakeEncoder

KEY = "sk-test-key"


def assert_unit(vector: list[float] | np.ndarray, length: int) -> None:
    assert len(vector) == length
    assert abs(float(np.linalg.norm(np.asarray(vector, dtype=np.float64))) - 1.0) <= 1e-4


async def test_async_openai_client_in_process() -> None:
    settings = make_settings(server={"api_keys": [KEY]}, model={"aliases": ["alias-model"]})
    async with api_client(settings, FakeEncoder(hidden_size=128)) as c:
        base = str(c.make_url("/v1"))
        async with (
            AsyncOpenAI(base_url=base, api_key=KEY, max_retries=0) as client,
            AsyncOpenAI(base_url=base, api_key="wrong", max_retries=0) as bad,
        ):
            await check_client(client, bad)


async def check_client(client: AsyncOpenAI, bad: AsyncOpenAI) -> None:
    # encoding_format not given: the client asks for base64 and decodes it itself.
    plain = await client.embeddings.create(model="fake-encoder", input=["a b", "c"])
    assert [d.index for d in plain.data] == [0, 1]
    for d in plain.data:
        assert_unit(d.embedding, 128)
    cut = await client.embeddings.create(model="alias-model", input="a b", dimensions=64)
    assert_unit(cut.data[0].embedding, 64)
    floats = await client.embeddings.create(
        model="fake-encoder", input="a b", encoding_format="float"
    )
    np.testing.assert_allclose(floats.data[0].embedding, plain.data[0].embedding, atol=1e-6)
    assert plain.usage.prompt_tokens == plain.usage.total_tokens == 3 + 2
    with pytest.raises(NotFoundError) as missing:
        await client.embeddings.create(model="gpt-x", input="a")
    assert "gpt-x" in str(missing.value)
    with pytest.raises(AuthenticationError):
        await bad.embeddings.create(model="fake-encoder", input="a")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served_minilm(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    from tests.model_fixtures import minilm_path

    port = free_port()
    config = tmp_path_factory.mktemp("serve") / "es-embed.yaml"
    config.write_text(
        f"model:\n  name: {minilm_path()}\n  served_name: minilm\n  device: cpu\n"
        f"server:\n  port: {port}\n  drain_seconds: 5\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ES_EMBED_SERVER_API_KEYS": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "es_embed.cli", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _wait_healthy(url: str, proc: subprocess.Popen[str]) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stdout is not None
            pytest.fail(f"es-embed serve exited {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail("es-embed serve did not become healthy in 120 s")


@pytest.mark.slow
def test_openai_client_against_es_embed_serve(
    served_minilm: tuple[str, subprocess.Popen[str]],
) -> None:
    url, proc = served_minilm
    with OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as client:
        check_served(client)
    stop_with_sigterm(proc)


def check_served(client: OpenAI) -> None:
    texts = ["Elasticsearch finds documents.", "A second, somewhat longer sentence to embed."]
    full = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    for d in full.data:
        assert_unit(d.embedding, 384)
    decoded = client.embeddings.create(model="minilm", input=texts)  # base64, decoded by client
    np.testing.assert_allclose(
        [d.embedding for d in decoded.data], [d.embedding for d in full.data], atol=1e-6
    )
    cut = client.embeddings.create(model="minilm", input=texts, dimensions=128)
    for d in cut.data:
        assert_unit(d.embedding, 128)
    raw = client.embeddings.create(model="minilm", input=texts[0], encoding_format="base64")
    vector = np.frombuffer(base64.b64decode(str(raw.data[0].embedding)), dtype="<f4")
    assert_unit(vector, 384)
    np.testing.assert_allclose(vector, full.data[0].embedding, atol=1e-6)


def stop_with_sigterm(proc: subprocess.Popen[str]) -> None:
    # SIGTERM: a clean exit well within drain_seconds (5) plus the grace.
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - started < 5 + 3
    assert proc.stdout is not None
    log = proc.stdout.read()
    assert "es-embed serving minilm (384 dims" in log and "shutting down" in log
    assert KEY not in log  # the key never reaches the log
