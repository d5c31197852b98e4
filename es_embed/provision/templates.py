"""Render the Kibana Dev Tools requests in ``es_embed/provision/templates/`` for one index.

The files are plain Dev Tools text (a ``PUT <path>`` line, then a JSON body) so a user can
paste them as they are; setup reads the same files and fills in the configured names,
dims, similarity, index options and analyzers, so there is one source for the mapping.
They ship inside the package (read with ``importlib.resources``, so a wheel or Docker
install finds them); the repository's top-level ``mappings/`` holds links to them.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from es_embed.config import IndexSettings
from es_embed.indices.document import deep_merge

TEMPLATES = resources.files("es_embed.provision") / "templates"
COMPONENT_FILE = "component-template.json"
PASSAGES_COMPONENT_FILE = "component-template-passages.json"  # vector_field is nested
INDEX_TEMPLATE_FILE = "index-template.json"
# Analyzers built into the server; every other one (cjk, english, ...) is in analysis-common.
SERVER_ANALYZERS = frozenset({"standard", "default"})


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any]

    def console(self) -> str:
        """As Kibana Dev Tools text, ready to paste."""
        return f"{self.method} {self.path}\n{json.dumps(self.body, indent=2)}\n"


def read_request(name: str, directory: Traversable = TEMPLATES) -> Request:
    path = directory / name
    text = path.read_text(encoding="utf-8")
    head, _, body = text.lstrip().partition("\n")
    method, _, target = head.strip().partition(" ")
    if method not in ("PUT", "POST") or not target:
        raise ValueError(f"{path}: the first line must be 'PUT <path>', got {head!r}")
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the body is not valid JSON: {exc}") from None
    return Request(method, target.strip(), parsed)


def template_name(index: str) -> str:
    """``es-embed-<name>``, with characters templates may not carry replaced."""
    return "es-embed-" + (re.sub(r"[^a-z0-9_.-]+", "-", index.lower()).strip("-.") or "index")


def vector_mapping(conf: IndexSettings, dims: int, base: dict[str, Any]) -> dict[str, Any]:
    field = copy.deepcopy(base)
    field.update({"type": "dense_vector", "dims": dims, "index": True})
    field["similarity"] = conf.similarity
    if conf.index_options:
        field["index_options"] = {"type": conf.index_options}
    else:
        field.pop("index_options", None)
    return field


def _nest(path: str, mapping: dict[str, Any]) -> dict[str, Any]:
    """``a.b`` -> {"a": {"properties": {"b": mapping}}} as mappings spell object fields."""
    parts = path.split(".")
    out: dict[str, Any] = mapping
    for part in reversed(parts[1:]):
        out = {"properties": {part: out}}
    return {parts[0]: out}


def text_mapping(analyzer: str) -> dict[str, Any]:
    return {"type": "text", "analyzer": analyzer}


def effective_analyzers(
    conf: IndexSettings, has_analysis_common: bool
) -> tuple[dict[str, str], list[str]]:
    """Analyzer per text field, and a note for each one the node cannot provide."""
    chosen: dict[str, str] = {}
    notes: list[str] = []
    for field in conf.text_fields:
        wanted = conf.analyzers.get(field, "standard")
        if wanted not in SERVER_ANALYZERS and not has_analysis_common:
            notes.append(
                f"{conf.name}: field {field!r} asks for analyzer {wanted!r}, which needs the "
                "analysis-common module that this cluster lacks; using 'standard' instead"
                + (" (it splits Han characters one by one)" if wanted == "cjk" else "")
            )
            wanted = "standard"
        chosen[field] = wanted
    return chosen, notes


def component_file(conf: IndexSettings) -> str:
    return COMPONENT_FILE if conf.passages is None else PASSAGES_COMPONENT_FILE


def _vector_field(conf: IndexSettings, dims: int, base_props: dict[str, Any]) -> dict[str, Any]:
    """The dense_vector, or for passages the nested field with one inside (``vector``)."""
    if conf.passages is None:
        base_vector = next(v for v in base_props.values() if v.get("type") == "dense_vector")
        return vector_mapping(conf, dims, base_vector)
    base_nested = copy.deepcopy(next(v for v in base_props.values() if v.get("type") == "nested"))
    inner = base_nested["properties"]
    inner["vector"] = vector_mapping(conf, dims, inner["vector"])
    return base_nested


def properties(
    conf: IndexSettings,
    dims: int,
    analyzers: dict[str, str],
    base: dict[str, Any],
    *,
    include_text: bool = True,
) -> dict[str, Any]:
    """Mapping properties for one index: the vector (or passages), ``_embed`` and
    (optionally) text fields. ``base`` is the body of ``component_file(conf)``."""
    base_props = base["template"]["mappings"]["properties"]
    props: dict[str, Any] = {}
    if include_text:
        for field, analyzer in analyzers.items():
            deep_merge(props, _nest(field, text_mapping(analyzer)))
    deep_merge(props, _nest(conf.vector_field, _vector_field(conf, dims, base_props)))
    props["_embed"] = copy.deepcopy(base_props["_embed"])
    return props


def component_template(
    conf: IndexSettings,
    dims: int,
    analyzers: dict[str, str],
    pipeline: str | None = None,
    directory: Traversable = TEMPLATES,
) -> Request:
    base = read_request(component_file(conf), directory)
    body = copy.deepcopy(base.body)
    body["template"]["mappings"]["properties"] = properties(conf, dims, analyzers, base.body)
    if pipeline:
        body["template"]["settings"] = {"index": {"default_pipeline": pipeline}}
    body.setdefault("_meta", {})["index"] = conf.name
    return Request("PUT", f"_component_template/{template_name(conf.name)}", body)


def index_template(conf: IndexSettings, directory: Traversable = TEMPLATES) -> Request:
    """For indices matching the configured name: our component, nothing else of ours."""
    base = read_request(INDEX_TEMPLATE_FILE, directory)
    body = copy.deepcopy(base.body)
    name = template_name(conf.name)
    body["index_patterns"] = [conf.name]
    body["composed_of"] = [name]
    body.pop("template", None)  # text fields come from the component (with their analyzers)
    body.setdefault("_meta", {})["index"] = conf.name
    return Request("PUT", f"_index_template/{name}", body)
