"""A one-shot run (backfill) gives up after ``follow.give_up_seconds`` of failures in a row;
without a limit (serve) the follower keeps retrying. Elasticsearch here is a closed port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from elasticsearch import AsyncElasticsearch
from elasticsearch import ConnectionError as ESConnectionError

from es_embed.config import BatchSettings, ModelSettings, settings_from_dict
from es_embed.elastic import retry as retry_module
from es_embed.embed.service import EmbeddingService
from es_embed.follow import follower as follower_module
from es_embed.follow.follower import Follower
from es_embed.indices.resolve import resolve_index
from tests.fakes import FakeEncoder
from tests.faults.support import free_port


@pytest.fixture
async def unreachable() -> AsyncIterator[Follower]:
    settings = settings_from_dict(
        {
            "follow": {"poll_interval": 0.05, "max_backoff": 0.1},
            "indices": [{"name": "docs", "dims": 32}],
        }
    )
    es = AsyncElasticsearch(f"http://127.0.0.1:{free_port()}", request_timeout=2, max_retries=0)
    service = EmbeddingService(FakeEncoder(), BatchSettings(), ModelSettings(name="fake"))
    target = resolve_index(settings.indices[0], service.info.shape)
    try:
        yield Follower(es, service, target, settings.follow)
    finally:
        await es.close()


async def test_a_one_shot_run_gives_up_with_the_last_failure(
    unreachable: Follower, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=follower_module.__name__)
    with pytest.raises(ESConnectionError):
        await asyncio.wait_for(unreachable.run_once_to_current(give_up=0.5), 30)
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 2, "it retried before giving up"
    # The last wait is cut to what is left of the limit, never past it.
    assert all(float(r.args[-1]) <= 0.5 for r in retries)  # type: ignore[index]


async def test_without_a_limit_it_keeps_retrying(unreachable: Follower) -> None:
    task = asyncio.create_task(unreachable.run_once_to_current())
    done, _ = await asyncio.wait({task}, timeout=1.5)
    assert not done, "serve's follower must wait out any outage"
    await unreachable.stop()  # stop() ends the retries; the last failure surfaces
    with pytest.raises(ESConnectionError):
        await asyncio.wait_for(task, 10)


def test_patience_counts_failures_in_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(retry_module.time, "monotonic", lambda: now[0])
    patience = retry_module.Patience(10.0)
    assert patience.delay(3.0) == 3.0  # the first failure starts the clock
    now[0] = 108.0
    assert patience.delay(3.0) == 2.0  # cut to what is left
    now[0] = 110.0
    assert patience.delay(3.0) is None  # out of patience: the caller raises
    patience.reset()  # progress was made: a new run of failures starts from zero
    assert patience.delay(3.0) == 3.0
    assert retry_module.Patience(None).delay(30.0) == 30.0
