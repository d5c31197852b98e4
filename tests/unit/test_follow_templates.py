"""mappings/*.json are Dev Tools requests; setup renders them per configured index."""

from __future__ import annotations

import pytest

from es_embed.config import settings_from_dict
from es_embed.provision import templates


def conf(**kw: object):  # type: ignore[no-untyped-def]
    # '@' is valid in an index name but not kept in a template name (wildcards, once used
    # here, are refused by the settings since issue 14).
    return settings_from_dict({"indices": [{"name": "docs@2024", "dims": 256, **kw}]}).indices[0]


@pytest.mark.parametrize("name", [templates.COMPONENT_FILE, templates.INDEX_TEMPLATE_FILE])
def test_mapping_files_are_paste_able_dev_tools_requests(name: str) -> None:
    req = templates.read_request(name)
    assert req.method == "PUT" and req.path.startswith("_")
    assert templates.read_request(name).console().startswith("PUT _")


def test_component_template_renders_dims_similarity_options_and_fields() -> None:
    c = conf(similarity="max_inner_product", index_options="int8_hnsw", vector_field="v.x",
             text_fields=["title", "body"], analyzers={"body": "cjk"})  # fmt: skip
    req = templates.component_template(c, 256, {"title": "standard", "body": "cjk"}, "pipe")
    assert req.path == "_component_template/es-embed-docs-2024"
    props = req.body["template"]["mappings"]["properties"]
    vector = props["v"]["properties"]["x"]
    assert vector == {
        "type": "dense_vector", "dims": 256, "index": True,
        "similarity": "max_inner_product", "index_options": {"type": "int8_hnsw"},
    }  # fmt: skip
    assert props["body"] == {"type": "text", "analyzer": "cjk"}
    assert props["_embed"]["properties"]["hash"] == {"type": "keyword", "index": False}
    assert req.body["template"]["settings"]["index"]["default_pipeline"] == "pipe"
    assert "embedding" not in props  # the file's example field name is replaced


def test_index_template_targets_the_configured_name() -> None:
    req = templates.index_template(conf())
    assert req.body["index_patterns"] == ["docs@2024"]
    assert req.body["composed_of"] == ["es-embed-docs-2024"]


def test_cjk_falls_back_to_standard_with_a_note_when_analysis_common_is_missing() -> None:
    c = conf(analyzers={"title": "cjk"})
    chosen, notes = templates.effective_analyzers(c, has_analysis_common=False)
    assert chosen == {"title": "standard", "text": "standard"}
    assert len(notes) == 1 and "'cjk'" in notes[0] and "Han" in notes[0]
    chosen, notes = templates.effective_analyzers(c, has_analysis_common=True)
    assert chosen["title"] == "cjk" and notes == []
