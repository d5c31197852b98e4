"""The real sidecar app on a loopback port, served from a background thread.

Client libraries (LangChain, LlamaIndex, the OpenAI client, the Elasticsearch client) are
used from synchronous code as their READMEs show; calling them from the test's own event loop
would block the loop the app runs on. So the app (``create_app``, as ``es-embed serve``
builds it, model loaded from the settings) gets its own loop in a thread, and the test talks
to it over HTTP on 127.0.0.1 like any client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from es_embed.api.app import create_app
from es_embed.config import Settings
from es_embed.metrics import Registry

START_SECONDS = 120  # model load on a shared 2-core machine


@dataclass(frozen=True)
class Sidecar:
    url: str
    registry: Registry
    api_key: str | None

    @property
    def v1(self) -> str:
        return f"{self.url}/v1"

    def requests(self, route: str, status: int, method: str = "POST") -> float:
        """How many requests the app answered on this route with this status."""
        labels = {"route": route, "method": method, "status": str(status)}
        return self.registry.get_sample_value("es_embed_http_requests_total", labels) or 0.0

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """A plain JSON POST, no client library: the reference the recipes are checked against."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def serving(settings: Settings, *, follow: bool = False) -> Iterator[Sidecar]:
    registry = Registry()
    app = create_app(settings, registry=registry, follow=follow)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sidecar", daemon=True)
    thread.start()

    async def start() -> int:
        await runner.setup()  # cleanup_ctx: the model, the ES client, the followers
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port: int = runner.addresses[0][1]
        return port

    def stop_loop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(START_SECONDS)
    except BaseException:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        stop_loop()
        raise
    keys = settings.server.api_keys
    try:
        yield Sidecar(f"http://127.0.0.1:{port}", registry, keys[0] if keys else None)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        stop_loop()
