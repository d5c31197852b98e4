"""A command whose reader goes away (``es-embed setup --print | head``) ends quietly with the
shell's broken-pipe status, not as an unreachable Elasticsearch (BrokenPipeError is a
ConnectionError)."""

from __future__ import annotations

import subprocess
import sys

from es_embed.cli.runtime import BROKEN_PIPE

COMMAND = """
import sys
from es_embed.cli.runtime import run_command

async def main():
    for i in range(200_000):
        print("line", i)
    return 0

sys.exit(run_command(main()))
"""


def test_a_closed_output_pipe_ends_the_command_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMAND], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"line 0\n"
    proc.stdout.close()  # the reader leaves, as head does
    with proc.stderr:
        stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == BROKEN_PIPE
    assert stderr == ""
