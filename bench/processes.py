"""Server subprocesses of the benchmarks: wait until one answers /health, stop it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any


async def wait_healthy(
    session: Any, url: str, proc: subprocess.Popen[bytes], seconds: float, log: Path | None = None
) -> None:
    """Return once ``url``/health answers 200; raise if the process exits or ``seconds`` pass
    (with the end of its ``log``, when given)."""
    import aiohttp

    tail = f":\n{log.read_text(errors='replace')[-4000:]}" if log is not None else "; see its log"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}{tail}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/health") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not become healthy in {seconds:g} s{tail}")


def stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM (the server drains), then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
