"""Start-up as ``es-embed serve`` does it, with the tiny Qwen3 on CPU: the model is warmed up
before the app answers anything, and the log says device, dtype, memory and budget."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from es_embed.api.app import create_app
from es_embed.config import settings_from_dict
from tests.unit.test_api_ops import metric


@pytest.mark.timeout(120)
async def test_serve_warms_up_and_logs_what_it_chose(
    tiny_qwen_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_from_dict({"model": {"name": str(tiny_qwen_dir), "device": "cpu"}})
    caplog.set_level(logging.INFO, logger="es_embed")
    async with TestClient(TestServer(create_app(settings))) as client:
        [ready] = [r.getMessage() for r in caplog.records if "model ready" in r.getMessage()]
        assert f"model ready: {tiny_qwen_dir.name} on cpu (float32), " in ready
        assert (
            " GiB resident; token budget 16,384 (fixed on cpu); bulk batches up to 100 ms = "
            in ready
        )
        # The measured speed: tokens/s of token work, and the fixed cost of a pass.
        assert re.search(r" tokens at [\d,]+ tokens/s \(\+\d+\.\d ms per pass\); ", ready)
        # The tiny Qwen3's two layers: where a bulk pass stands aside for a query.
        assert ready.endswith("; a bulk pass stands aside for queries at 2 layers")
        health = await client.get("/health")
        assert health.status == 200
        text = await (await client.get("/metrics")).text()
        # The warm-up measured the model's speed, so the bulk lane is already bounded ...
        bulk = metric(text, "es_embed_batch_token_budget", lane="bulk")
        assert f"= {int(bulk):,} tokens at" in ready
        # ... and its passes are not counted as work anyone asked for.
        assert metric(text, "es_embed_tokens_total", lane="bulk") == 0
        assert metric(text, "es_embed_batch_size_count") == 0
