"""The README's client recipes (LangChain, LlamaIndex, the OpenAI client), each run as written
against the real sidecar app with the real tiny Qwen3 on a loopback port.

Every vector a client library returns is checked against the sidecar's answer to a plain JSON
POST, so a client that sends something else (token ids, a newline-free text, no input_type)
shows up as a different vector or an error, never as a pass.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import tiktoken
from langchain_openai import OpenAIEmbeddings
from llama_index.embeddings.openai_like import OpenAILikeEmbedding
from prometheus_client import generate_latest

from es_embed.config import DEFAULT_QUERY_TASK, settings_from_dict
from es_embed.embed.encoder import HFEncoder
from es_embed.embed.service import format_query
from tests.sidecar_thread import Sidecar, serving

KEY = "sk-ecosystem-test"
SERVED = "qwen3-embedding-tiny"
ALIAS = "text-embedding-3-small"  # a name OpenAI-only tools insist on
DOCS = [
    "Vaccines train the immune system to recognise a virus before infection.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
]
QUERY = "how do vaccines protect you"
ATOL = 1e-5  # float32 through JSON (or base64) and back


@pytest.fixture(scope="module")
def sidecar(tiny_qwen_dir: Path) -> Iterator[Sidecar]:
    settings = settings_from_dict(
        {
            "model": {
                "name": str(tiny_qwen_dir),
                "served_name": SERVED,
                "aliases": [ALIAS],
                "device": "cpu",
            },
            "server": {"api_keys": [KEY]},
        }
    )
    with serving(settings) as running:
        yield running


def reference(sidecar: Sidecar, texts: Sequence[str], **extra: Any) -> np.ndarray:
    """The sidecar's own answer to a plain POST /v1/embeddings."""
    status, body = sidecar.post("/v1/embeddings", {"input": list(texts), "model": SERVED, **extra})
    assert status == 200, body
    return np.array([d["embedding"] for d in body["data"]], dtype=np.float32)


def langchain_embeddings(sidecar: Sidecar, **kw: Any) -> OpenAIEmbeddings:
    # The README recipe; check_embedding_ctx_length=False sends text, not tiktoken ids.
    return OpenAIEmbeddings(
        model=kw.pop("model", SERVED),
        base_url=sidecar.v1,
        api_key=KEY,  # type: ignore[arg-type]
        check_embedding_ctx_length=kw.pop("check_embedding_ctx_length", False),
        **kw,
    )


def llamaindex_embeddings(sidecar: Sidecar, **kw: Any) -> OpenAILikeEmbedding:
    return OpenAILikeEmbedding(
        model_name=kw.pop("model_name", SERVED),
        api_base=sidecar.v1,
        api_key=KEY,
        embed_batch_size=64,
        max_retries=0,
        **kw,
    )


# ---- LangChain OpenAIEmbeddings --------------------------------------------------------------


def assert_sidecar_document_vectors(
    sidecar: Sidecar,
    embed_documents: Callable[[list[str]], Any],
    embed_query: Callable[[str], Any],
) -> None:
    np.testing.assert_allclose(embed_documents(DOCS), reference(sidecar, DOCS), atol=ATOL)
    # Without input_type (see below) a query is embedded as a document.
    np.testing.assert_allclose(embed_query(QUERY), reference(sidecar, [QUERY])[0], atol=ATOL)


def test_langchain_recipe_sends_text_and_gets_the_sidecars_vectors(sidecar: Sidecar) -> None:
    embeddings = langchain_embeddings(sidecar)
    assert_sidecar_document_vectors(sidecar, embeddings.embed_documents, embeddings.embed_query)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connections to it are refused


def test_langchain_default_first_downloads_tiktoken_files(
    sidecar: Sidecar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # nothing cached
    # Offline, as this machine is; a proxy nobody answers makes it so on any machine.
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{closed_port()}")
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    embeddings = langchain_embeddings(sidecar, check_embedding_ctx_length=True)
    before = http_requests(sidecar)
    with pytest.raises(OSError) as info:  # requests' ConnectionError is an OSError
        embeddings.embed_documents(DOCS)
    assert "cl100k_base.tiktoken" in str(info.value)
    assert http_requests(sidecar) == before  # nothing reached the sidecar


def http_requests(sidecar: Sidecar) -> list[str]:
    """The request counter's lines from /metrics' registry (one per route and status)."""
    lines = generate_latest(sidecar.registry).decode().splitlines()
    return [line for line in lines if line.startswith("es_embed_http_requests_total{")]


def byte_encoding() -> tiktoken.Encoding:
    """A tiktoken encoding built here: one token per byte (cl100k_base is a download)."""
    return tiktoken.Encoding(
        name="bytes-stand-in",
        pat_str=r"\S+|\s+",
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )


def test_langchain_default_sends_token_ids_which_es_embed_refuses(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With an encoding at hand (cached, or downloaded where there is network) LangChain
    # tokenises and sends each text as a list of token ids; the stand-in shows what follows.
    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda _name: byte_encoding())
    embeddings = langchain_embeddings(sidecar, check_embedding_ctx_length=True, max_retries=0)
    refused = sidecar.requests("/v1/embeddings", 400)
    with pytest.raises(openai.BadRequestError) as info:
        embeddings.embed_documents(DOCS)
    error = info.value.body
    assert isinstance(error, dict), error
    assert (error["param"], error["code"]) == ("input", "token_ids_unsupported"), error
    assert "token ids" in error["message"]
    assert sidecar.requests("/v1/embeddings", 400) == refused + 1


# ---- input_type: query from clients that do not know it ------------------------------------


@pytest.fixture(scope="module")
def query_vector(sidecar: Sidecar, tiny_qwen_encoder: HFEncoder) -> np.ndarray:
    """The sidecar's ``input_type: query`` vector, checked to carry the query instruction."""
    vector = reference(sidecar, [QUERY], input_type="query")[0]
    instructed = format_query(DEFAULT_QUERY_TASK, QUERY)
    expected = tiny_qwen_encoder.forward(tiny_qwen_encoder.tokenize([instructed]))[0]
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=ATOL)
    document = reference(sidecar, [QUERY])[0]
    assert float(np.dot(vector, document)) < 0.999  # the instruction changed the vector
    return vector


def test_openai_client_extra_body_input_type(sidecar: Sidecar, query_vector: np.ndarray) -> None:
    with openai.OpenAI(base_url=sidecar.v1, api_key=KEY, max_retries=0) as client:
        resp = client.embeddings.create(
            model=SERVED, input=QUERY, extra_body={"input_type": "query"}
        )
    np.testing.assert_allclose(resp.data[0].embedding, query_vector, atol=ATOL)


def test_langchain_model_kwargs_extra_body_input_type(
    sidecar: Sidecar, query_vector: np.ndarray
) -> None:
    queries = langchain_embeddings(sidecar, model_kwargs={"extra_body": {"input_type": "query"}})
    np.testing.assert_allclose(queries.embed_query(QUERY), query_vector, atol=ATOL)


def test_llamaindex_additional_kwargs_extra_body_input_type(
    sidecar: Sidecar, query_vector: np.ndarray
) -> None:
    queries = llamaindex_embeddings(
        sidecar, additional_kwargs={"extra_body": {"input_type": "query"}}
    )
    np.testing.assert_allclose(queries.get_query_embedding(QUERY), query_vector, atol=ATOL)


# ---- LlamaIndex OpenAILikeEmbedding --------------------------------------------------------


def test_llamaindex_recipe_gets_the_sidecars_vectors(sidecar: Sidecar) -> None:
    embed_model = llamaindex_embeddings(sidecar)
    assert_sidecar_document_vectors(
        sidecar, embed_model.get_text_embedding_batch, embed_model.get_query_embedding
    )


def test_llamaindex_sends_newlines_as_spaces(sidecar: Sidecar) -> None:
    two_lines = "Vaccines\ntrain the immune system"
    got = llamaindex_embeddings(sidecar).get_text_embedding(two_lines)
    spaced, as_written = reference(sidecar, [two_lines.replace("\n", " "), two_lines])
    np.testing.assert_allclose(got, spaced, atol=ATOL)
    assert float(np.dot(got, as_written)) < 0.999  # what the follower would embed differs


# ---- model.served_name / model.aliases -----------------------------------------------------


def test_an_alias_serves_clients_that_insist_on_openai_model_names(sidecar: Sidecar) -> None:
    expected = reference(sidecar, [DOCS[0]])[0]
    with openai.OpenAI(base_url=sidecar.v1, api_key=KEY, max_retries=0) as client:
        resp = client.embeddings.create(model=ALIAS, input=DOCS[0])
        assert resp.model == SERVED  # the answer names the model that really served it
        np.testing.assert_allclose(resp.data[0].embedding, expected, atol=ATOL)
        with pytest.raises(openai.NotFoundError) as info:
            client.embeddings.create(model="text-embedding-3-large", input=DOCS[0])
        models = client.models.list()
    error = info.value.body
    assert isinstance(error, dict), error
    assert (error["param"], error["code"]) == ("model", "model_not_found"), error
    assert ALIAS in error["message"] and SERVED in error["message"]
    assert [m.id for m in models.data] == [SERVED]
    lc = langchain_embeddings(sidecar, model=ALIAS)
    np.testing.assert_allclose(lc.embed_query(DOCS[0]), expected, atol=ATOL)
    li = llamaindex_embeddings(sidecar, model_name=ALIAS)
    np.testing.assert_allclose(li.get_text_embedding(DOCS[0]), expected, atol=ATOL)
