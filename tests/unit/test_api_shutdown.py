"""Graceful shutdown: in-flight requests finish within server.drain_seconds, or get 503."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestServer

from es_embed.api.app import create_app
from tests.api_support import make_settings
from tests.fakes import GatedEncoder


async def shutdown_during_request(
    drain_seconds: float, release_after: float | None
) -> tuple[int, dict]:
    encoder = GatedEncoder(timeout=30)
    server = TestServer(
        create_app(make_settings(server={"drain_seconds": drain_seconds}), encoder=encoder)
    )
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(
                session.post(server.make_url("/v1/embeddings"), json={"input": "in flight"})
            )
            await asyncio.to_thread(encoder.entered.wait, 10)
            closing = asyncio.create_task(server.close())
            if release_after is not None:
                await asyncio.sleep(release_after)
                encoder.gate.set()
            resp = await request
            body = await resp.json()
            await closing
            return resp.status, body
    finally:
        encoder.gate.set()
        await server.close()


async def test_in_flight_request_finishes_during_the_drain() -> None:
    status, body = await shutdown_during_request(drain_seconds=10, release_after=0.3)
    assert status == 200, body
    assert len(body["data"][0]["embedding"]) == 64


async def test_request_still_running_after_the_drain_gets_503() -> None:
    status, body = await shutdown_during_request(drain_seconds=0.2, release_after=None)
    assert status == 503, body
    assert body["error"]["type"] == "service_unavailable"
    assert "shutting down" in body["error"]["message"]
