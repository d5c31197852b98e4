"""The text and hash rules the follower, the loader and the Painless pipeline share."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from es_embed.indices.document import (
    content_hash,
    document_text,
    hash_prefix,
    stored_hash,
    vector_doc,
)
from es_embed.provision.pipeline import PAINLESS, pipeline_body

FIELDS = ("title", "text")


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ({"title": "T", "text": "body"}, "T\nbody"),
        ({"text": "body", "title": "T"}, "T\nbody"),  # configured order, not document order
        ({"title": "", "text": "body"}, "body"),
        ({"title": " \t\n", "text": None}, ""),
        ({"title": 42, "text": True}, ""),  # non-strings never count
        ({"title": ["a", "", 3, "b"], "text": "c"}, "a\nb\nc"),
        ({"other": "x"}, ""),
    ],
)
def test_document_text(source: dict, text: str) -> None:
    assert document_text(source, FIELDS) == text


def test_dotted_fields_read_nested_objects_or_literal_dotted_keys() -> None:
    assert document_text({"a": {"b": "nested"}}, ("a.b",)) == "nested"
    assert document_text({"a.b": "literal"}, ("a.b",)) == "literal"
    assert document_text({"a": "not an object"}, ("a.b",)) == ""


def test_blank_means_nothing_above_u0020_like_java_trim() -> None:
    # U+00A0 survives Java's trim(), so it is text for both Python and Painless.
    assert document_text({"title": "\u00a0"}, ("title",)) == "\u00a0"


def test_hash_covers_model_dims_and_text_and_is_one_sha256_over_prefix_plus_text() -> None:
    base = content_hash("m", 32, "text")
    assert base != content_hash("m2", 32, "text")
    assert base != content_hash("m", 64, "text")
    assert base != content_hash("m", 32, "text2")
    # What the Painless script computes: (params.prefix + text).sha256()
    assert base == hashlib.sha256((hash_prefix("m", 32) + "text").encode()).hexdigest()


def test_pipeline_params_reproduce_the_hash() -> None:
    body = pipeline_body("docs", ("title", "body.text"), "vec", "model-x", 256)
    params = body["processors"][0]["script"]["params"]
    text = params["joiner"].join(["T", "B"])
    assert hashlib.sha256((params["prefix"] + text).encode()).hexdigest() == content_hash(
        "model-x", 256, document_text({"title": "T", "body": {"text": "B"}}, ("title", "body.text"))
    )
    assert params["fields"] == ["title", "body.text"] and params["vector_field"] == "vec"
    assert "sha256()" in PAINLESS and "\\n" not in PAINLESS  # no escapes Painless lacks


def test_stored_hash_reads_object_or_dotted_forms() -> None:
    assert stored_hash({"_embed": {"hash": "h"}}) == "h"
    assert stored_hash({"_embed.hash": "h"}) == "h"
    assert stored_hash({"_embed": None}) is None
    assert stored_hash({}) is None


def test_vector_doc_nests_dotted_vector_fields_and_clears_with_nulls() -> None:
    doc = vector_doc("vec.main", "m", 3, np.array([0.6, 0.8, 0.0], np.float32), "h")
    assert doc["vec"]["main"] == pytest.approx([0.6, 0.8, 0.0])
    assert doc["_embed"]["hash"] == "h" and doc["_embed"]["dims"] == 3
    assert doc["_embed"]["model"] == "m" and doc["_embed"]["at"].endswith("+00:00")
    assert vector_doc("vec.main", "m", 3, None, None) == {"vec": {"main": None}, "_embed": None}
