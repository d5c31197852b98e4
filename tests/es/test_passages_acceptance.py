"""Issue 10's acceptance on a real node with MiniLM: a fact deep inside a long document is
found by a paraphrased question, through its passage; one vector per document misses it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from elasticsearch import AsyncElasticsearch

from es_embed.cli import search as cli
from es_embed.config import settings_from_dict
from es_embed.embed.protocol import Encoder
from es_embed.embed.service import EmbeddingService
from es_embed.indices.document import document_text
from es_embed.indices.resolve import IndexTarget, resolve_index
from es_embed.ingest.loader import IngestOptions, Loader
from es_embed.provision.setup import Setup
from es_embed.search.execute import Searcher
from es_embed.search.spec import SearchSpec
from tests.es.follow_support import unique
from tests.es.search_support import service
from tests.service_support import service_standin

pytestmark = pytest.mark.es
__all__ = ["service"]  # fixture

FACT = "The drain pump is covered by the manufacturer for seven years after the date of purchase."
QUESTION = "For how many years is the pump guaranteed?"

# A dishwasher manual that never mentions pumps, guarantees or years outside the fact.
MANUAL = [
    "Load plates in the lower basket facing the centre of the machine.",
    "Cups and glasses belong upside down in the upper rack.",
    "Long knives should lie flat in the cutlery tray with the blades down.",
    "Rinse aid helps water run off the dishes and leaves fewer spots.",
    "Refill the salt container when the indicator light on the panel turns on.",
    "Choose the eco programme for lightly soiled everyday crockery.",
    "The intensive programme heats the water for pans with burnt-on food.",
    "Clean the filter at the bottom of the tub once a month under running water.",
    "Wipe the door seal with a damp cloth to keep it supple.",
    "Spray arms can be lifted off and their nozzles cleared with a toothpick.",
    "Do not wash wooden boards, cast iron or hand-painted porcelain in the machine.",
    "The delay start button postpones the cycle by up to nine hours.",
    "A child lock keeps the controls from being changed during a cycle.",
    "If the display shows E4, close the water tap and call the service line.",
    "Level the appliance with its adjustable feet so the door closes evenly.",
    "Connect the inlet hose to a cold water tap with a standard thread.",
]


def long_manual(encoder: Encoder, after_tokens: int, total_tokens: int) -> tuple[str, int]:
    """The manual's text with the fact placed once ``after_tokens`` tokens have passed, and
    the token at which the fact starts."""
    sentences: list[str] = []
    fact_token = -1
    i = 0
    while True:
        text = " ".join(sentences)
        used = len(encoder.spans([text])[0].ids)
        if fact_token < 0 and used > after_tokens:
            fact_token = used
            sentences.append(FACT)
        elif used >= total_tokens:
            return text, fact_token
        else:
            step = MANUAL[i % len(MANUAL)]
            sentences.append(f"Section {i + 1}. {step}" if i % len(MANUAL) == 0 else step)
            i += 1


OTHERS = [
    ("Laptop care", "The battery of this laptop carries a one year warranty."),
    ("Phone repair", "Cracked screens are replaced free within the first month."),
    ("Bread", "Knead the dough for ten minutes before letting it rise."),
    ("Garden", "Prune roses in late winter to encourage new growth."),
    ("Bicycle", "Pump the tyres to the pressure printed on their sidewall."),
    ("Kettle", "Descale the kettle with vinegar when white flakes appear."),
    ("Washing machine", "Wool garments need the cold cycle and a slow spin."),
    ("Oven", "Preheat the oven before baking so the cake rises evenly."),
]


def other_documents() -> list[dict[str, str]]:
    topics = ["travel", "tax", "football", "weather", "music", "chess", "coffee", "birds"]
    docs = [{"title": t, "text": body} for t, body in OTHERS]
    for n in range(40 - len(docs)):
        topic = topics[n % len(topics)]
        text = f"A short note about {topic}, number {n}, with nothing else."
        docs.append({"title": f"Notes on {topic} {n}", "text": text})
    return docs


async def load(
    es: AsyncElasticsearch, service: EmbeddingService, tmp_path: Path, rows: list[Any], **conf: Any
) -> IndexTarget:
    name = unique("passages")
    settings = settings_from_dict({
        "indices": [{"name": name, **conf}], "follow": {"state_index": unique("state")}
    })  # fmt: skip
    await Setup(es, settings, service.info.shape).run()
    target = resolve_index(settings.indices[0], service.info.shape)
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = await Loader(es, service, target, IngestOptions(chunk_docs=16)).run(path)
    assert result.failed == 0 and result.embedded == len(rows), result
    await es.indices.refresh(index=name)
    return target


@pytest.fixture
async def cleanup(aes: AsyncElasticsearch) -> AsyncIterator[None]:
    yield
    for pattern in ("passages-*", "state-*"):
        await aes.options(ignore_status=404).indices.delete(index=pattern)
    await aes.options(ignore_status=404).indices.delete_index_template(name="es-embed-passages-*")
    await aes.options(ignore_status=404).cluster.delete_component_template(
        name="es-embed-passages-*"
    )


def cli_search(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="es-embed")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    return code, out.getvalue()


async def check_cli(target: IndexTarget, es_url: str, tmp_path: Path) -> None:
    """``es-embed search`` prints the best passage; ``--dev-console`` the nested request."""
    config = tmp_path / "es-embed.yaml"
    index = {"name": target.name, "passages": {"max_tokens": 64}}
    config.write_text(yaml.safe_dump({"elasticsearch": {"url": es_url}, "indices": [index]}))
    argv = ["search", QUESTION, "--index", target.name, "--config", str(config), "--mode", "knn"]
    code, out = await asyncio.to_thread(cli_search, [*argv, "--k", "1"])
    assert code == 0 and out.splitlines()[1].split()[2] == "manual", out
    assert out.splitlines()[3].startswith("     > [") and FACT in out, out
    code, out = await asyncio.to_thread(cli_search, [*argv, "--dev-console"])
    assert code == 0 and '"field": "embedding.vector"' in out and '"inner_hits": {' in out


@pytest.mark.timeout(300)
async def test_a_fact_deep_in_a_long_document_is_found_through_its_passage(
    aes: AsyncElasticsearch,
    es_url: str,
    service: EmbeddingService,
    minilm_encoder: Encoder,
    tmp_path: Path,
    cleanup: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text, fact_token = long_manual(minilm_encoder, after_tokens=900, total_tokens=1800)
    assert fact_token > 900 and 1750 <= len(minilm_encoder.spans([text])[0].ids) <= 1850
    rows = [{"_id": "manual", "title": "Dishwasher manual", "text": text}]
    rows += [{"_id": f"other-{i}", **doc} for i, doc in enumerate(other_documents())]

    target = await load(aes, service, tmp_path, rows, passages={"max_tokens": 64})
    searcher = Searcher(aes, service.embed_query, [target])
    result = await searcher.search(SearchSpec(index=target.name, query=QUESTION, mode="knn", k=5))
    top = result.hits[0]
    assert top.id == "manual", [(h.id, h.score) for h in result.hits]
    assert top.passages and FACT in (top.passages[0].text or ""), top.passages
    best = top.to_json()["passages"][0]
    joined = document_text(top.source, target.text_fields)
    assert joined[best["start"] : best["end"]] == best["text"]
    assert len(top.passages) == 3 and top.passages[0].score >= top.passages[1].score

    hybrid = await searcher.search(SearchSpec(index=target.name, query=QUESTION, k=5))
    manual = next(h for h in hybrid.hits if h.id == "manual")
    assert manual.passages and FACT in (manual.passages[0].text or "")
    monkeypatch.setattr(cli, "embedding_service", service_standin(minilm_encoder))
    await check_cli(target, es_url, tmp_path)

    # The same documents with one vector each: the fact lies past the model's 256 tokens.
    plain = await load(aes, service, tmp_path, rows)
    one = await Searcher(aes, service.embed_query, [plain]).search(
        SearchSpec(index=plain.name, query=QUESTION, mode="knn", k=5)
    )
    assert one.hits[0].id != "manual" and one.hits[0].passages is None
