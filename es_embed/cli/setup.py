"""``es-embed setup --config FILE [--index NAME] [--pipeline] [--inference-endpoint URL]
[--search-key]``."""

from __future__ import annotations

import argparse
from typing import Any

from es_embed.cli.runtime import es_client, run_command, settings_or_report
from es_embed.config import ConfigError, IndexSettings, Settings
from es_embed.embed.shape import ModelShape, read_model_shape
from es_embed.indices.resolve import resolve_index
from es_embed.provision import templates
from es_embed.provision.search_key import SearchKey, create_search_key, search_key_request
from es_embed.provision.setup import Setup, node_modules


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "setup",
        help="create or update the vector mapping of every configured index",
        description="Put the component template, create missing indices, add the vector "
        "mapping to existing ones (refusing other dims or similarity), create the state "
        "index. Idempotent.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML settings file")
    p.add_argument("--index", action="append", metavar="NAME", help="only this index (repeat)")
    p.add_argument(
        "--pipeline", action="store_true",
        help="also install a default_pipeline dropping stale vectors (needs ingest-common "
        "and lang-painless)",
    )  # fmt: skip
    p.add_argument(
        "--inference-endpoint", metavar="URL",
        help="register this sidecar (its base URL) as an openai-service inference endpoint; "
        "it sends a key from server.api_keys or server.api_keys_file, so one must be set",
    )  # fmt: skip
    p.add_argument(
        "--search-key", action="store_true",
        help="also create an API key that may only read the configured indices, for "
        "elasticsearch.search_api_key (printed once; needs security on the cluster)",
    )  # fmt: skip
    p.add_argument(
        "--print", action="store_true", dest="print_only",
        help="print the requests as Kibana Dev Tools text instead of applying them",
    )  # fmt: skip
    p.set_defaults(func=main)


def model_shape(settings: Settings, confs: list[IndexSettings]) -> tuple[ModelShape, str | None]:
    """The model's shape from its config files, and a note when they cannot be read.

    Setup may run where the model's files are not (an admin's laptop): then, when every
    index names its dims, they are taken as given and the note says they were not checked.
    """
    try:
        return read_model_shape(settings.model), None
    except ConfigError as exc:
        if not all(conf.dims for conf in confs):
            raise ConfigError(f"{exc}; or set dims for every index") from None
        model = settings.model
        shape = ModelShape(
            model.model_id,
            max(conf.dims for conf in confs),
            model.matryoshka != "no",  # unknown: trust the configured dims
        )
        note = (
            f"cannot read the config of {model.name!r} here, so each index's dims were taken "
            "as configured, unchecked against the model"
        )
        return shape, note


def main(args: argparse.Namespace) -> int:
    settings = settings_or_report(args.config)
    if settings is None:
        return 2
    return run_command(_run(settings, args), settings)


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.indices:
        raise ConfigError("indices: nothing to set up; add at least one index to the config")
    names = args.index or None
    confs = [settings.index(n) for n in names] if names else list(settings.indices)
    shape, shape_note = model_shape(settings, confs)
    if shape_note:
        print(f"{'# ' if args.print_only else ''}note: {shape_note}")
    if args.print_only:
        async with es_client(settings) as es:
            common = "analysis-common" in await node_modules(es)
        for conf in confs:
            analyzers, notes = templates.effective_analyzers(conf, common)
            for note in notes:
                print(f"# note: {note}")
            pipeline = templates.template_name(conf.name) if args.pipeline else None
            print(
                templates.component_template(
                    conf, resolve_index(conf, shape).dims, analyzers, pipeline
                ).console()
            )
            print(templates.index_template(conf).console())
        if args.search_key:
            print(search_key_request([c.name for c in settings.indices]).console())
        return 0
    async with es_client(settings) as es:
        setup = Setup(
            es, settings, shape, pipeline=args.pipeline, inference_url=args.inference_endpoint
        )
        report = await setup.run(names)
        for line in report.lines():
            print(line)
        if args.search_key:
            key = await create_search_key(es, [c.name for c in settings.indices])
            print_search_key(key)
    return 0


def print_search_key(key: SearchKey) -> None:
    """Printed once, never logged: Elasticsearch cannot show the secret again."""
    print(
        f"search API key {key.name} (id {key.id}): read on {', '.join(key.indices)}; set it as "
        "elasticsearch.search_api_key (better: ES_EMBED_ELASTICSEARCH_SEARCH_API_KEY), it is "
        "shown only this once:"
    )
    print(key.encoded)
