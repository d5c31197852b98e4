"""The sidecar as a real process (``es-embed serve``, tiny Qwen on CPU): SIGKILL mid-batch and
SIGTERM with work in flight. Both must leave every stored checkpoint at or behind what was
written, and a restart must finish the job."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from elasticsearch import AsyncElasticsearch

from es_embed.cli.serve import SHUTDOWN_GRACE
from es_embed.config import settings_from_dict
from es_embed.follow.feed import PAGES_IN_FLIGHT
from es_embed.provision.setup import Setup
from tests.fakes import ANY_SHAPE
from tests.faults.support import (
    Expect,
    Sidecar,
    bulk_load,
    checkpoint_violations,
    cleaned_up,
    count_embedded,
    embedded_at,
    hash_mismatches,
    sidecar_config,
    stored_checkpoints,
    wait_for,
)

pytestmark = [pytest.mark.es, pytest.mark.slow]

DOCS = 4000
PAGE = 64
EXPECT = Expect(model="tiny-qwen", dims=64)


async def prepared(
    es: AsyncElasticsearch, tmp_path: Path, tiny_qwen_dir: Path, es_url: str, **conf: Any
) -> tuple[Sidecar, str, str]:
    index, state = f"fault-{uuid.uuid4().hex[:8]}", f"fault-state-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "es-embed.yaml"
    # One replica name across restarts: the restarted sidecar takes its own shard leases back
    # at once instead of waiting for them to lapse (follow.lease_seconds).
    raw = sidecar_config(
        config, model_dir=tiny_qwen_dir, es_url=es_url, index=index, state_index=state,
        follow={"page_size": PAGE, "replica_id": "fault-sidecar"}, **conf,
    )  # fmt: skip
    await Setup(es, settings_from_dict(raw), ANY_SHAPE).run()
    sidecar = Sidecar(config, raw["server"]["port"], tmp_path / "sidecar.log")
    return sidecar, index, state


@pytest.mark.timeout(120)
async def test_sigkill_mid_batch_then_restart(
    aes: AsyncElasticsearch, es_url: str, tmp_path: Path, tiny_qwen_dir: Path
) -> None:
    sidecar, index, state = await prepared(aes, tmp_path, tiny_qwen_dir, es_url)
    async with cleaned_up(aes, index, state):
        try:
            # Long-ish texts so the back-fill lasts long enough to be interrupted.
            await bulk_load(aes, index, DOCS, words=120)
            sidecar.start()
            await sidecar.wait_healthy()

            async def some_written() -> bool:
                return await count_embedded(aes, index) >= 3 * PAGE

            await wait_for(some_written, 60, "the back-fill under way")
            sidecar.signal(signal.SIGKILL)
            assert await sidecar.wait_exit(10) == -signal.SIGKILL
            before = await embedded_at(aes, index)
            assert 0 < len(before) < DOCS, "the kill came after the back-fill finished"
            # The crash left no checkpoint ahead of the writes it covers.
            assert await checkpoint_violations(aes, index, state, EXPECT) == []
            checkpoints = await stored_checkpoints(aes, state)

            sidecar.start()
            await sidecar.wait_healthy()

            async def all_current() -> bool:
                return await hash_mismatches(aes, index, EXPECT) == []

            await wait_for(all_current, 60, "every document current after the restart", 0.5)
            before_count = len(before)

            async def reported() -> bool:  # the follower publishes its counts on each poll
                return embedded_count(sidecar.metrics()) >= DOCS - before_count

            await wait_for(reported, 10, "the restart's counts published")
            metrics = sidecar.metrics()
            sidecar.signal(signal.SIGTERM)
            assert await sidecar.wait_exit(30) == 0
        finally:
            sidecar.kill()
        after = await embedded_at(aes, index)
        assert len(after) == DOCS
        twice = sorted(i for i, at in before.items() if after[i] != at)
        second_run = embedded_count(metrics)
        report = (
            f"SIGKILL after {len(before)} of {DOCS} vectors written; "
            f"checkpoints at the kill: {sorted(checkpoints.values())}; "
            f"the restart embedded {second_run}; written twice: {len(twice)}"
        )
        print(report)
        # Documents embedded twice: at most the pages in flight at the kill, per shard.
        assert len(twice) <= PAGES_IN_FLIGHT * PAGE * max(1, len(checkpoints)), report
        assert second_run == DOCS - len(before) + len(twice), report
        assert await checkpoint_violations(aes, index, state, EXPECT) == []


def embedded_count(metrics: str) -> int:
    total = 0
    for line in metrics.splitlines():
        if line.startswith("es_embed_follow_documents_total{") and 'outcome="embedded"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


@pytest.mark.timeout(120)
async def test_sigterm_drains_and_stores_the_checkpoint(
    aes: AsyncElasticsearch, es_url: str, tmp_path: Path, tiny_qwen_dir: Path
) -> None:
    drain = 2.0
    sidecar, index, state = await prepared(
        aes, tmp_path, tiny_qwen_dir, es_url, server={"drain_seconds": drain}
    )
    async with cleaned_up(aes, index, state):
        try:
            await bulk_load(aes, index, DOCS, words=120)
            sidecar.start()
            await sidecar.wait_healthy()
            await wait_for(lambda: _at_least(aes, index, 2 * PAGE), 60, "the back-fill under way")
            async with aiohttp.ClientSession() as session:
                # Requests in flight at the signal: big enough to be still running.
                big = {"input": [f"request {i} " + "lorem ipsum " * 200 for i in range(256)]}
                requests = [
                    asyncio.create_task(_post(session, sidecar.url + "/v1/embeddings", big))
                    for _ in range(3)
                ]
                await asyncio.sleep(0.3)
                signalled = time.monotonic()
                sidecar.signal(signal.SIGTERM)
                code = await sidecar.wait_exit(drain + SHUTDOWN_GRACE + 15)
                took = time.monotonic() - signalled
                answers = await asyncio.gather(*requests)
        finally:
            sidecar.kill()
        log = sidecar.log()
        assert code == 0, log
        assert "shutting down: up to 2 s to drain" in log and "stopped" in log
        # Bounded by the drain time plus the grace, plus interpreter exit on a busy machine.
        assert took < drain + SHUTDOWN_GRACE + 10, (took, log)
        for status, body in answers:
            if status == 200:
                assert len(body["data"]) == 256
            else:
                # Never a dropped connection or a 500: a clear 503 naming the shutdown.
                assert status == 503, (status, body)
                assert "shutting down" in body["error"]["message"], body
        checkpoints = await stored_checkpoints(aes, state)
        assert checkpoints and min(checkpoints.values()) >= 0, checkpoints
        assert await checkpoint_violations(aes, index, state, EXPECT) == []
        print(f"SIGTERM: exit in {took:.1f} s; requests: {[s for s, _ in answers]}; "
              f"checkpoints stored: {sorted(checkpoints.values())}")  # fmt: skip


async def _at_least(es: AsyncElasticsearch, index: str, n: int) -> bool:
    return await count_embedded(es, index) >= n


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, json=body) as resp:
        return resp.status, json.loads(await resp.read())
