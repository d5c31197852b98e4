"""The wheel smoke's command-line part: the installed ``es-embed`` run as a user runs it.

What every step shares (a failure type, progress lines, running the venv's commands from
outside the checkout), the checks that need no Elasticsearch (each command's ``--help``;
a bad argument to each gives exit code 2 and exactly one ``error:`` line, before anything
is contacted), and the read-side commands: ``setup --print``, ``status`` (table and
``--json``) and ``search`` (``--json``, ``--dev-console``, the text table).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

STARTED = time.monotonic()
COMMANDS = ("serve", "setup", "backfill", "ingest", "search", "status")
DIMS = 384  # all-MiniLM-L6-v2
STATUS_HEADER = ["INDEX", "SHARD", "CHECKPOINT", "LAG", "OWNER", "LEASE", "AGE"]
QUERY = "how does a shot teach the body to fight germs"
EXPECTED_TOP = "s04"  # samples/corpus.jsonl: "How vaccines train the immune system"


def say(message: str) -> None:
    """A progress line with the seconds since start: where a slow run spends its time."""
    print(f"[{time.monotonic() - STARTED:4.0f} s] {message}", flush=True)


class SmokeFailure(Exception):
    """What went wrong, worded so that no traceback is needed."""


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command; a non-zero exit is a SmokeFailure carrying its output's tail."""
    done = subprocess.run(argv, text=True, capture_output=True, **kw)
    if done.returncode != 0:
        raise SmokeFailure(f"`{' '.join(argv)}` exited {done.returncode}:\n" + tail(done))
    return done


def tail(done: subprocess.CompletedProcess[str], lines: int = 15) -> str:
    return "\n".join(f"    {line}" for line in (done.stdout + done.stderr).splitlines()[-lines:])


def clean_env() -> dict[str, str]:
    """Nothing may point the venv's Python back at this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def together(*checks: Callable[[], object], at_once: int = 0) -> None:
    """Run independent checks at once (commands that each load the model, mostly), wait
    for all of them, then raise the first failure. Each command spends most of its time
    starting (imports, the model), so side by side they take far less than in a row."""
    with ThreadPoolExecutor(max_workers=at_once or len(checks)) as pool:
        futures = [pool.submit(check) for check in checks]
    for future in futures:
        future.result()


@dataclass(frozen=True)
class Installed:
    """The venv's ``es-embed``, run from ``work`` (outside the checkout) with clean_env()."""

    venv: Path
    work: Path

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        """Run ``es-embed ARGS``; any exit code but ``code`` is a SmokeFailure."""
        argv = [str(self.venv / "bin" / "es-embed"), *args]
        done = subprocess.run(
            argv, cwd=self.work, env=clean_env(), text=True, capture_output=True, timeout=300
        )
        if done.returncode != code:
            raise SmokeFailure(
                f"`es-embed {' '.join(args)}` exited {done.returncode}, want {code}:\n" + tail(done)
            )
        return done


# ---- no Elasticsearch needed: --help and bad arguments ---------------------------------------


def check_help(cli: Installed, command: str) -> None:
    done = cli(*([command] if command else []), "--help")
    usage = f"usage: es-embed {command}".rstrip()
    if not done.stdout.startswith(usage) or done.stderr:
        raise SmokeFailure(f"`es-embed {command} --help` printed {done.stdout[:200]!r}")
    if not command:
        missing = [c for c in COMMANDS if f"\n    {c} " not in done.stdout]
        if missing:
            raise SmokeFailure(f"`es-embed --help` does not list {', '.join(missing)}")


def bad_arguments(config: Path, bad_jsonl: Path, index: str) -> list[tuple[list[str], str]]:
    """(argv, what its one error line must say): at least one per command, each refused
    before the model loads or Elasticsearch is asked (``config`` names an address where
    nothing listens, so a command that reached out would exit 1, not 2)."""
    c = str(config)
    return [
        ([], "the following arguments are required: COMMAND"),
        (["serve", "--config", "no-such.yaml"], "cannot read config file no-such.yaml"),
        (["setup", "--config", c, "--index", "nope"], "index 'nope' is not configured"),
        (["backfill", "--config", c, "--index", "nope"], "index 'nope' is not configured"),
        (["ingest", str(bad_jsonl), "--config", c, "--index", index], f"{bad_jsonl}:2: "),
        (["search", "q", "--config", c, "--index", index, "--k", "0"], "k must be at least 1"),
        (["search", "q", "--index", index, "--mode", "nope"], "argument --mode: invalid choice"),
        (["status", "--config", c, "--index", "nope"], "index 'nope' is not configured"),
    ]


def check_bad_argument(cli: Installed, argv: list[str], expected: str) -> None:
    """Exit 2, nothing on stdout, and on stderr the one ``error:`` line, last; before it
    only argparse's usage, and only where argparse itself refused the arguments."""
    done = cli(*argv, code=2)
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if "error:" in line]
    alone = len(lines) == 1 or lines[0].startswith("usage: es-embed")
    if errors != lines[-1:] or not alone or expected not in errors[0] or done.stdout:
        raise SmokeFailure(
            f"`es-embed {' '.join(argv)}`: want exit 2 and one last line 'error: ...{expected}"
            f"...', got stdout {done.stdout[-200:]!r}, stderr:\n" + tail(done)
        )


def check_offline(cli: Installed, config: Path, index: str) -> int:
    """Every --help and bad argument, a few at a time; returns how many ran."""
    bad_jsonl = cli.work / "bad.jsonl"
    bad_jsonl.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n')
    checks = [partial(check_help, cli, command) for command in ("", *COMMANDS)]
    checks += [
        partial(check_bad_argument, cli, argv, expected)
        for argv, expected in bad_arguments(config, bad_jsonl, index)
    ]
    together(*checks, at_once=4)
    return len(checks)


# ---- setup --print, status, search -----------------------------------------------------------


def console_requests(text: str, method: str) -> list[tuple[str, Any]]:
    """(path, body) of each ``METHOD path`` line and the JSON below it (Dev Tools text)."""
    found: list[tuple[str, Any]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(method + " "):
            body = []
            for nxt in lines[i + 1 :]:
                if not nxt.strip() or nxt.startswith(("#", "PUT ", "GET ", "POST ")):
                    break
                body.append(nxt)
            found.append((line.split(" ", 1)[1], json.loads("\n".join(body))))
    return found


def check_setup_print(cli: Installed, config: Path, indices: Sequence[str]) -> None:
    """Both templates of every index, with the model's 384 dims (that nothing was applied
    is the caller's to check)."""
    out = cli("setup", "--config", str(config), "--print").stdout
    requests = dict(console_requests(out, "PUT"))
    kinds = ("component", "index")
    want = {f"_{kind}_template/es-embed-{name}" for name in indices for kind in kinds}
    if set(requests) != want:
        raise SmokeFailure(f"setup --print printed {sorted(requests)}, want {sorted(want)}")
    for name in indices:
        mapping = requests[f"_component_template/es-embed-{name}"]["template"]["mappings"]
        dims = mapping["properties"]["embedding"].get("dims")
        if dims != DIMS:
            raise SmokeFailure(f"setup --print: {name}'s embedding has dims {dims}, not {DIMS}")


def status_json(cli: Installed, config: Path, *index: str) -> dict[str, Any]:
    only = [arg for name in index for arg in ("--index", name)]
    done = cli("status", "--config", str(config), "--json", *only)
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def status_table(cli: Installed, config: Path, *index: str) -> dict[str, list[str]]:
    """The shard table: its rows by index name, each row's cells (checked: the header)."""
    only = [arg for name in index for arg in ("--index", name)]
    out = cli("status", "--config", str(config), *only).stdout
    lines = out.splitlines()
    if not lines or lines[0].split() != STATUS_HEADER:
        raise SmokeFailure(f"es-embed status printed no shard table:\n{out}")
    rows: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line.strip():
            break
        rows[line.split()[0]] = line.split()
    return rows


def check_status_owners(cli: Installed, config: Path, owners: dict[str, str]) -> None:
    """While serve runs: one row per index, each for shard 0, whose OWNER is the replica
    holding its lease ("-": none) and LEASE AGE the lease's age ("-" without one)."""
    rows = status_table(cli, config)
    if sorted(rows) != sorted(owners) or any(r[1] != "0" for r in rows.values()):
        raise SmokeFailure(f"es-embed status: rows {rows}, want shard 0 of each of {owners}")
    got = {name: row[4] for name, row in rows.items()}
    aged = {name: row[5] != "-" for name, row in rows.items()}
    if got != owners or any(aged[name] != (owner != "-") for name, owner in owners.items()):
        raise SmokeFailure(f"es-embed status: rows {rows}, want the owners {owners}")


def check_search(cli: Installed, config: Path, index: str, url: str) -> None:
    """``es-embed search --server URL`` (the query embedded by the running sidecar, so no
    second model load) with ``--json``, ``--dev-console`` and as the text table, at once."""
    args = (QUERY, "--config", str(config), "--index", index, "--server", url)
    together(
        partial(check_search_json, cli, args),
        partial(check_search_console, cli, args, index),
        partial(check_search_table, cli, args),
    )


def check_search_json(cli: Installed, args: Sequence[str]) -> None:
    hits = json.loads(cli("search", *args, "--json").stdout)["hits"]
    if len(hits) != 10 or hits[0]["_id"] != EXPECTED_TOP:
        ids = [h["_id"] for h in hits]
        raise SmokeFailure(f"es-embed search --json: hits {ids}, want 10 with {EXPECTED_TOP} first")
    if hits[0]["legs"]["knn"]["rank"] != 1:
        raise SmokeFailure(f"es-embed search --json: {EXPECTED_TOP}'s legs {hits[0]['legs']}")


def check_search_console(cli: Installed, args: Sequence[str], index: str) -> None:
    """Both legs as Dev Tools requests: BM25's multi_match, then kNN's 384-float vector."""
    console = cli("search", *args, "--dev-console").stdout
    legs = console_requests(console, "GET")
    if [path for path, _ in legs] != [f"{index}/_search"] * 2:
        raise SmokeFailure(f"es-embed search --dev-console: requests {legs!r:.300}")
    vector = legs[1][1].get("knn", {}).get("query_vector", [])
    if len(vector) != DIMS or "multi_match" not in json.dumps(legs[0][1]):
        raise SmokeFailure(f"es-embed search --dev-console: not a bm25 then a kNN leg:\n{console}")


def check_search_table(cli: Installed, args: Sequence[str]) -> None:
    table = cli("search", *args).stdout.splitlines()
    if not table[0].startswith("10 hits  (hybrid, ") or f" {EXPECTED_TOP}  [" not in table[1]:
        raise SmokeFailure("es-embed search printed:\n" + "\n".join(table[:4]))
