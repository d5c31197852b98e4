"""``es-embed setup --config FILE [--index NAME] [--pipeline] [--inference-endpoint URL]``."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from es_embed.config import ConfigError, IndexSettings, ModelSettings, Settings
from es_embed.follow import templates
from es_embed.follow.runtime import es_client, run_command, settings_or_report
from es_embed.follow.setup import Setup, node_modules


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
        help="register this sidecar (its base URL) as an openai-service inference endpoint",
    )  # fmt: skip
    p.add_argument(
        "--print", action="store_true", dest="print_only",
        help="print the requests as Kibana Dev Tools text instead of applying them",
    )  # fmt: skip
    p.set_defaults(func=main)


@functools.cache
def model_dims(model: ModelSettings) -> int:
    """The model's output dimension from its config.json (no weights are loaded)."""
    from transformers import AutoConfig  # heavy: only when a configured dims is 0

    try:
        config = AutoConfig.from_pretrained(model.name, trust_remote_code=model.trust_remote_code)
    except Exception as exc:
        raise ConfigError(
            f"model.name: cannot read the config of {model.name!r} to learn its dimension "
            f"({exc}); set dims for each index explicitly"
        ) from None
    for attr in ("hidden_size", "d_model", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"model.name: {model.name!r} has no hidden_size; set dims explicitly")


def dims_resolver(settings: Settings) -> Any:
    def dims_for(conf: IndexSettings) -> int:
        return conf.dims or model_dims(settings.model)

    return dims_for


def main(args: argparse.Namespace) -> int:
    settings = settings_or_report(args.config)
    if settings is None:
        return 2
    return run_command(_run(settings, args), settings)


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.indices:
        raise ConfigError("indices: nothing to set up; add at least one index to the config")
    names = args.index or None
    dims_for = dims_resolver(settings)
    if args.print_only:
        confs = [settings.index(n) for n in names] if names else settings.indices
        async with es_client(settings) as es:
            common = "analysis-common" in await node_modules(es)
        for conf in confs:
            analyzers, notes = templates.effective_analyzers(conf, common)
            for note in notes:
                print(f"# note: {note}")
            pipeline = templates.template_name(conf.name) if args.pipeline else None
            print(templates.component_template(conf, dims_for(conf), analyzers, pipeline).console())
            print(templates.index_template(conf).console())
        return 0
    async with es_client(settings) as es:
        setup = Setup(
            es, settings, dims_for, pipeline=args.pipeline, inference_url=args.inference_endpoint
        )
        report = await setup.run(names)
    for line in report.lines():
        print(line)
    return 0
