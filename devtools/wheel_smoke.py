"""The last step of `make test`: es-embed as a user gets it from its wheel, not this checkout.

1. build the wheel (``pip wheel . --no-deps``) from a clean copy of what the Dockerfile's
   build stage copies, and check it holds every data file the package has (templates,
   ``py.typed``);
2. install it, not editable, with its declared dependencies, into a fresh virtual
   environment ``.venv-wheel`` (see ``ensure_venv`` for when that one is reused);
3. from a temporary directory outside the checkout and without ``PYTHONPATH``: check that
   the venv imports ``es_embed`` from its own site-packages; every command's ``--help``,
   and a bad argument to each: exit code 2 and one ``error:`` line (while a test node
   starts: ``ES_URL``, else devtools/es_node.py);
4. ``es-embed setup``;
5. ``es-embed serve`` starts, and while its model loads, at once: ``es-embed ingest
   FILE.jsonl`` and ``ingest DIR`` (.txt, .md, .html, .pdf), ``es-embed backfill`` (past a
   document the model refuses; ``status`` lists it) and ``es-embed setup --print`` (Dev
   Tools text; nothing applied);
6. ``backfill --retry-failed`` takes the refused document again; meanwhile ``serve``:
   ``/health`` 200, one ``POST /v1/embeddings``, two documents written with the plain
   elasticsearch client get their vectors from the follower, one ``POST /v1/search`` ranks
   the right one first on the kNN leg;
7. ``es-embed status`` names each index's lease owner, and ``es-embed search --server``
   (``--json``, ``--dev-console``, the text table) finds the right document first;
8. SIGTERM, and ``serve`` must exit 0.

Steps 3-8 are in devtools/wheel_smoke_run.py (the commands' checks: wheel_smoke_cli.py,
wheel_smoke_load.py). Any failure ends in one ``wheel smoke FAILED: <what>`` line (after
the server's log tail where it ran) and exit code 1, so `make test` fails with it.

    python -m devtools.wheel_smoke [--fresh] [--venv DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.error
import zipfile
from pathlib import Path
from typing import Any

from devtools.es_node import NodeError
from devtools.wheel_smoke_cli import SmokeFailure, clean_env, run, say
from devtools.wheel_smoke_run import smoke

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-wheel"
# Exactly what the Dockerfile's build stage copies: the wheel must build from these alone.
SOURCES = ("pyproject.toml", "README.md", "es_embed")
STAMP = "es-embed-smoke.json"


# ---- 1. the wheel --------------------------------------------------------------------------


def build_wheel(out: Path) -> Path:
    """Build from a copy, so nothing stale in this checkout's build/ can reach the wheel."""
    src = out / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(out)], cwd=src)
    wheels = sorted(out.glob("es_embed-*.whl"))
    if len(wheels) != 1:
        raise SmokeFailure(f"expected one es_embed wheel in {out}, found {wheels}")
    check_wheel_data(wheels[0])
    return wheels[0]


def package_data() -> set[str]:
    """Every file under es_embed/ that is not Python source: what package-data must ship."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "es_embed").rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc")
    }


def check_wheel_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        missing = sorted(package_data() - set(zf.namelist()))
    if missing:
        raise SmokeFailure(
            f"{wheel.name} lacks {', '.join(missing)}: "
            "add them to [tool.setuptools.package-data] in pyproject.toml"
        )


# ---- 2. the virtual environment ------------------------------------------------------------


def requirements(wheel: Path) -> list[str]:
    """The wheel's declared runtime dependencies (Requires-Dist without extras), sorted."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    declared = (
        line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")
    )
    # A test or dev extra does not change what `pip install es-embed` brings.
    return sorted(req for req in declared if "extra ==" not in req)


def freeze(venv: Path) -> list[str]:
    done = run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude", "es-embed"])
    return sorted(done.stdout.split())


def ensure_venv(venv: Path, wheel: Path, fresh: bool) -> str:
    """Install the wheel into ``venv``; say whether the venv was fresh or reused.

    Installing torch and its CUDA libraries into a new venv takes minutes here, and pip's
    HTTP cache does not help where the index's answers carry no cache headers. So a venv is
    reused only when it is exactly what a fresh one would hold: the same Python, the wheel's
    declared dependencies unchanged, and ``pip freeze`` unchanged since it was made. Then
    only es-embed itself is reinstalled. Anything else (a clean clone, as in CI; a changed
    dependency; ``--fresh``) builds it anew.
    """
    stamp = {"python": sys.version, "requires": requirements(wheel)}
    python = str(venv / "bin" / "python")
    if not fresh and reusable(venv, stamp):
        run([python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(wheel)])
        return "reused (dependencies unchanged); es-embed reinstalled from the wheel"
    if venv.exists() and not (venv / "pyvenv.cfg").exists():
        raise SmokeFailure(f"{venv} exists and is not a virtual environment; not replacing it")
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv)])
    run([python, "-m", "pip", "install", "-q", str(wheel)])
    stamp["freeze"] = freeze(venv)
    (venv / STAMP).write_text(json.dumps(stamp, indent=1))
    return f"fresh: the wheel and its dependencies installed in {time.monotonic() - started:.0f} s"


def reusable(venv: Path, stamp: dict[str, Any]) -> bool:
    try:
        old = json.loads((venv / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if {k: old.get(k) for k in stamp} != stamp:
        return False
    try:
        return bool(old.get("freeze") == freeze(venv))
    except SmokeFailure:  # a broken venv
        return False


# ---- 3. what is imported -------------------------------------------------------------------


def check_import_location(venv: Path, cwd: Path) -> str:
    """es_embed must come from the venv's site-packages, installed from a wheel, not editable."""
    probe = (
        "import es_embed, importlib.metadata as m, json, sysconfig; print(json.dumps(["
        "es_embed.__file__, sysconfig.get_paths()['purelib'],"
        " m.distribution('es-embed').read_text('direct_url.json')]))"
    )
    out = run([str(venv / "bin" / "python"), "-c", probe], cwd=cwd, env=clean_env()).stdout
    module, purelib, direct_url = json.loads(out)
    site = Path(purelib).resolve()
    if not Path(module).resolve().is_relative_to(site) or not site.is_relative_to(venv):
        raise SmokeFailure(f"es_embed was imported from {module}, not from {venv}'s site-packages")
    if json.loads(direct_url or "{}").get("dir_info", {}).get("editable"):
        raise SmokeFailure(f"es-embed is an editable install in {venv}: {direct_url}")
    return module


def describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):  # the demo's helpers stop with a message
        return str(exc.code)
    if isinstance(exc, urllib.error.HTTPError):  # the sidecar's answer says what was wrong
        return f"{exc.url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}"
    if isinstance(exc, SmokeFailure | NodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, default=VENV, help="the install's venv")
    parser.add_argument("--fresh", action="store_true", help="always make a new venv")
    args = parser.parse_args(argv)
    venv = args.venv.resolve()
    try:
        with tempfile.TemporaryDirectory(prefix="es-embed-wheel-") as tmp:
            say("1/8 building the wheel")
            wheel = build_wheel(Path(tmp))
            say(f"  {wheel.name}: package data present")
            say(f"2/8 installing it into {venv}")
            say(f"  {ensure_venv(venv, wheel, args.fresh)}")
            work = Path(tmp) / "outside"  # nothing to import from there
            work.mkdir()
            say(f"  es_embed imported from {check_import_location(venv, work)}")
            smoke(venv, work)
    except (Exception, SystemExit) as exc:
        print(f"wheel smoke FAILED: {describe(exc)}", file=sys.stderr)
        return 1
    say("wheel smoke passed: every es-embed command works as installed from the wheel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
