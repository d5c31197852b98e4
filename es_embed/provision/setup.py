"""``es-embed setup``: make every configured index ready to be followed, idempotently.

For each configured name: put the component template (vector field, ``_embed`` record,
text fields with their analyzers); create the index when missing, else add the mapping
to each concrete index behind it (alias members, data stream backing indices); refuse,
naming the index and both values, when an existing vector field has other dims or
similarity (neither can change in place). Then the state index, and on request the
``default_pipeline`` and an inference endpoint. Running it twice changes nothing.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from es_embed.config import ConfigError, IndexSettings, ServerSettings, Settings, api_keys
from es_embed.elastic.refusals import ALREADY_EXISTS, error_type
from es_embed.embed.shape import ModelShape
from es_embed.errors import EmbedError, ErrorKind
from es_embed.follow.state import ensure_state_index
from es_embed.indices.resolve import IndexTarget, resolve_all, resolve_index
from es_embed.provision import templates
from es_embed.provision.pipeline import pipeline_body

log = logging.getLogger(__name__)

PIPELINE_MODULES = ("ingest-common", "lang-painless")


@dataclass
class SetupReport:
    actions: list[str] = field(default_factory=list)  # what changed (or was already right)
    notes: list[str] = field(default_factory=list)  # fallbacks and hints for the user

    def lines(self) -> list[str]:
        return [*self.actions, *(f"note: {n}" for n in self.notes)]


def conflict(message: str, param: str) -> EmbedError:
    return EmbedError(ErrorKind.UNPROCESSABLE, message, param=param, code="mapping_conflict")


def _subset(want: Any, have: Any) -> bool:
    """Every key/value of ``want`` is in ``have`` (what we would PUT is already there)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_subset(v, have.get(k)) for k, v in want.items())
    return bool(want == have)


def _lookup(props: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: Any = {"properties": props}
    for part in path.split("."):
        node = (node.get("properties") or {}).get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node if isinstance(node, dict) else None


def inference_key(server: ServerSettings) -> str:
    """The bearer key Elasticsearch will send to this sidecar: one the sidecar accepts.

    The openai service requires an ``api_key``, and a made-up one would be refused by a
    sidecar that checks keys, so without a configured key there is nothing to register.
    """
    keys = api_keys(server)
    if not keys:
        raise ConfigError(
            "--inference-endpoint: the openai inference service needs an api_key, and this "
            "sidecar accepts none; set server.api_keys or server.api_keys_file (the sidecar "
            "then requires that key, and setup registers it with the endpoint)"
        )
    return sorted(keys)[0]  # any accepted key works; the first keeps re-runs identical


def inference_body(model_id: str, url: str, dims: int, key: str) -> dict[str, Any]:
    """The PUT body of an openai-service text_embedding endpoint pointing at this sidecar."""
    full = url.rstrip("/")
    if not full.endswith("/v1/embeddings"):
        full += "/v1/embeddings"
    return {
        "service": "openai",
        "service_settings": {"api_key": key, "model_id": model_id, "url": full, "dimensions": dims},
    }


async def node_modules(es: AsyncElasticsearch) -> set[str]:
    """Modules present on every node (a module only some nodes have cannot be relied on)."""
    resp = await es.nodes.info(metric="modules", filter_path="nodes.*.modules.name")
    sets = [{m["name"] for m in n.get("modules", [])} for n in resp.get("nodes", {}).values()]
    return set.intersection(*sets) if sets else set()


class Setup:
    def __init__(
        self,
        es: AsyncElasticsearch,
        settings: Settings,
        model: ModelShape,
        *,
        pipeline: bool = False,
        inference_url: str | None = None,
    ) -> None:
        self._es = es
        self._settings = settings
        self._model = model
        self._pipeline = pipeline
        self._inference_url = inference_url
        self.report = SetupReport()
        self._modules: set[str] = set()

    async def run(self, names: list[str] | None = None) -> SetupReport:
        if self._inference_url:
            inference_key(self._settings.server)  # refused before anything is written
        self._modules = await node_modules(self._es)
        if self._pipeline:
            missing = [m for m in PIPELINE_MODULES if m not in self._modules]
            if missing:
                raise EmbedError(
                    ErrorKind.UNPROCESSABLE,
                    f"--pipeline needs the {' and '.join(missing)} module(s), which this "
                    "cluster lacks (every official distribution and image has them); "
                    "run setup without --pipeline: the follower alone keeps vectors right",
                    param="pipeline",
                    code="missing_module",
                )
        confs = [self._settings.index(n) for n in names] if names else self._settings.indices
        # Every index resolves (dims checked against the model) before anything is written.
        targets = resolve_all(confs, self._model)
        for target in targets:
            await self.index(target)
        state = self._settings.follow.state_index
        created = await ensure_state_index(self._es, state)
        self._say(f"state index {state}: {'created' if created else 'exists'}")
        if self._inference_url:
            for conf in confs:
                await self.inference_endpoint(conf, self._inference_url)
        return self.report

    def _say(self, line: str) -> None:
        log.info("%s", line)
        self.report.actions.append(line)

    # ---- one index ----------------------------------------------------------------------

    async def index(self, target: IndexTarget) -> None:
        conf, dims = target.conf, target.dims
        analyzers, notes = templates.effective_analyzers(conf, "analysis-common" in self._modules)
        self.report.notes.extend(notes)
        pipeline = templates.template_name(conf.name) if self._pipeline else None
        if pipeline:
            await self._put_pipeline(pipeline, conf, dims)
        component = templates.component_template(conf, dims, analyzers, pipeline)
        await self._put_template("component template", component, "_component_template")
        resolved: dict[str, Any] = {}
        try:
            resolved = dict(await self._es.indices.resolve_index(name=conf.name))
        except NotFoundError:
            pass  # nothing by that name yet: created below
        concrete = [i["name"] for i in resolved.get("indices", [])]
        for alias in resolved.get("aliases", []):
            concrete += alias.get("indices", [])
        for stream in resolved.get("data_streams", []):
            concrete += stream.get("backing_indices", [])
            self.report.notes.append(
                f"{conf.name} is a data stream: add {templates.template_name(conf.name)!r} "
                "to the composed_of list of its index template so new backing indices get "
                "the vector mapping"
            )
        if not resolved.get("aliases") and not resolved.get("data_streams"):
            await self._index_template(conf)
        if not concrete:
            await self._create(conf, component, pipeline)
            return
        for name in sorted(set(concrete)):
            await self._update_mapping(conf, name, dims, analyzers)
            if pipeline:
                await self._set_pipeline(name, pipeline)

    async def _create(self, conf: IndexSettings, component: templates.Request,
                      pipeline: str | None) -> None:  # fmt: skip
        body = component.body["template"]
        try:
            await self._es.indices.create(
                index=conf.name, mappings=body["mappings"], settings=body.get("settings")
            )
        except ApiError as exc:
            if error_type(exc) != ALREADY_EXISTS:
                raise
        self._say(f"index {conf.name}: created")

    async def _update_mapping(self, conf: IndexSettings, index: str, dims: int,
                              analyzers: dict[str, str]) -> None:  # fmt: skip
        resp = await self._es.indices.get_mapping(index=index)
        props = resp[index]["mappings"].get("properties", {})
        self._check_vector(conf, index, dims, _lookup(props, conf.vector_field))
        wanted = dict(analyzers)
        for name, analyzer in analyzers.items():
            existing = _lookup(props, name)
            if existing is not None:
                wanted.pop(name)
                if (
                    existing.get("type") == "text"
                    and existing.get("analyzer", "standard") != analyzer
                ):
                    self.report.notes.append(
                        f"{index}: text field {name!r} keeps its analyzer "
                        f"{existing.get('analyzer', 'standard')!r} (an analyzer cannot change "
                        f"in place; reindex to use {analyzer!r})"
                    )
        base = templates.read_request(templates.COMPONENT_FILE).body
        desired = templates.properties(conf, dims, wanted, base)
        if _subset(desired, props):
            self._say(f"index {index}: mapping already in place")
            return
        try:
            await self._es.indices.put_mapping(index=index, properties=desired)
        except ApiError as exc:
            raise conflict(
                f"index {index}: Elasticsearch refused the mapping for {conf.vector_field!r} "
                f"and _embed: {exc.message}: {exc.info}",
                f"indices ({conf.name})",
            ) from None
        self._say(f"index {index}: added the vector mapping ({conf.vector_field}, {dims} dims)")

    @staticmethod
    def _check_vector(conf: IndexSettings, index: str, dims: int,
                      existing: dict[str, Any] | None) -> None:  # fmt: skip
        if existing is None:
            return
        field_ = conf.vector_field
        where = f"indices ({conf.name})"
        if existing.get("type") != "dense_vector":
            raise conflict(
                f"index {index}: field {field_!r} exists as {existing.get('type')!r}, not "
                "dense_vector; choose another vector_field or reindex",
                f"{where}.vector_field",
            )
        have = existing.get("dims")
        if have is not None and have != dims:
            raise conflict(
                f"index {index}: field {field_!r} has {have} dims but the configuration asks "
                f"for {dims}; set dims: {have} for this index, or reindex into a new index "
                "(dims cannot change in place)",
                f"{where}.dims",
            )
        similarity = existing.get("similarity", "cosine")
        if similarity != conf.similarity:
            raise conflict(
                f"index {index}: field {field_!r} uses similarity {similarity!r} but the "
                f"configuration asks for {conf.similarity!r}; set similarity: {similarity} "
                "for this index, or reindex into a new index",
                f"{where}.similarity",
            )

    async def _put_template(self, kind: str, req: templates.Request, prefix: str) -> None:
        name = req.path.rsplit("/", 1)[-1]
        key = "component_templates" if prefix == "_component_template" else "index_templates"
        try:
            if prefix == "_component_template":
                got = await self._es.cluster.get_component_template(name=name)
            else:
                got = await self._es.indices.get_index_template(name=name)
            current = got[key][0][key[:-1]]
        except NotFoundError:
            current = None
        if current is not None and _subset(req.body, current):
            self._say(f"{kind} {name}: unchanged")
            return
        await self._es.perform_request(
            "PUT", "/" + req.path, body=req.body,
            headers={"content-type": "application/json", "accept": "application/json"},
        )  # fmt: skip
        self._say(f"{kind} {name}: {'updated' if current else 'created'}")

    async def _index_template(self, conf: IndexSettings) -> None:
        """Our index template, so a deleted and recreated index gets the mapping again;
        only when no template of the user's matches (one index gets one index template)."""
        ours = templates.template_name(conf.name)
        resp = await self._es.indices.get_index_template()
        others = [
            t["name"]
            for t in resp.get("index_templates", [])
            if t["name"] != ours
            and any(
                fnmatch.fnmatchcase(conf.name, p) for p in t["index_template"]["index_patterns"]
            )
        ]
        if others:
            self.report.notes.append(
                f"{conf.name}: index template {others[0]!r} applies to it; add {ours!r} to its "
                "composed_of list so a recreated index gets the vector mapping"
            )
            return
        await self._put_template(
            "index template", templates.index_template(conf), "_index_template"
        )

    # ---- pipeline and inference endpoint ----------------------------------------------

    async def _put_pipeline(self, name: str, conf: IndexSettings, dims: int) -> None:
        body = pipeline_body(
            conf.name, conf.text_fields, conf.vector_field, self._settings.model.model_id, dims
        )
        try:
            current = (await self._es.ingest.get_pipeline(id=name)).get(name)
        except NotFoundError:
            current = None
        if current is not None and _subset(body, current):
            self._say(f"pipeline {name}: unchanged")
            return
        await self._es.ingest.put_pipeline(id=name, **body)
        self._say(f"pipeline {name}: {'updated' if current else 'created'}")

    async def _set_pipeline(self, index: str, pipeline: str) -> None:
        resp = await self._es.indices.get_settings(index=index, name="index.default_pipeline")
        current = resp.get(index, {}).get("settings", {}).get("index", {}).get("default_pipeline")
        if current == pipeline:
            self._say(f"index {index}: default_pipeline already {pipeline}")
            return
        if current and current != "_none":
            raise conflict(
                f"index {index}: default_pipeline is already {current!r}; es-embed will not "
                f"replace it (add a 'pipeline' processor calling {pipeline!r} at its end, or "
                "run setup without --pipeline)",
                "pipeline",
            )
        await self._es.indices.put_settings(
            index=index, settings={"index": {"default_pipeline": pipeline}}
        )
        self._say(f"index {index}: default_pipeline set to {pipeline}")

    async def inference_endpoint(self, conf: IndexSettings, url: str) -> None:
        endpoint = templates.template_name(conf.name)
        dims = resolve_index(conf, self._model).dims
        key = inference_key(self._settings.server)
        body = inference_body(self._settings.model.model_id, url, dims, key)
        full = body["service_settings"]["url"]
        path = f"/_inference/text_embedding/{endpoint}"
        headers = {"content-type": "application/json", "accept": "application/json"}
        try:
            got = await self._es.perform_request("GET", path, headers=headers)
            existing = got.body.get("endpoints", [{}])[0].get("service_settings", {})
        except NotFoundError:
            existing = None
        except ApiError as exc:
            raise self._no_inference(exc) from None
        if existing is not None:
            same = existing.get("url") == full and existing.get("dimensions") == dims
            if same:
                self._say(f"inference endpoint {endpoint}: unchanged")
                return
            raise conflict(
                f"inference endpoint {endpoint} exists with url {existing.get('url')!r} and "
                f"{existing.get('dimensions')} dimensions; delete it "
                f"(DELETE _inference/text_embedding/{endpoint}) to re-register",
                "inference_endpoint",
            )
        try:
            await self._es.perform_request("PUT", path, headers=headers, body=body)
        except ApiError as exc:
            raise self._no_inference(exc) from None
        self._say(f"inference endpoint {endpoint}: created ({full}, {dims} dims)")

    @staticmethod
    def _no_inference(exc: ApiError) -> EmbedError:
        return EmbedError(
            ErrorKind.UNPROCESSABLE,
            f"this cluster cannot register an inference endpoint ({exc.meta.status}: "
            f"{exc.message}); it needs the inference plugin and a licence that allows the "
            "openai service. The follower does not need it.",
            param="inference_endpoint",
            code="inference_unavailable",
        )
