"""The package's shape, checked: each folder one job, imports pointing one way, small modules.

Layers, lowest first; a module may import its own layer's siblings' *lower* layers only
(and within its own folder freely):

    base       config (config_checks is its validation), errors, metrics, strict_json
    embed      the model side (no Elasticsearch, no HTTP)
    elastic    Elasticsearch access;   indices: one configured index and its documents
    follow / ingest / provision / search: the jobs (follow never imports the others)
    api, cli   the front ends (api never imports cli)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "es_embed"
MAX_LINES = 400

# folder (or base module) -> the es_embed folders/modules it may import
ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "errors": set(),
    "metrics": set(),
    "strict_json": {"errors"},
    "embed": {"config", "errors", "metrics"},
    "elastic": {"config", "errors", "metrics"},
    "indices": {"config", "errors", "embed"},
    "follow": {"config", "errors", "metrics", "embed", "elastic", "indices"},
    "ingest": {"config", "errors", "metrics", "embed", "elastic", "indices"},
    "search": {"config", "errors", "metrics", "strict_json", "embed", "elastic", "indices"},
    # setup creates the state index the follower owns
    "provision": {"config", "errors", "embed", "elastic", "indices", "follow"},
    "api": {
        "config",
        "errors",
        "metrics",
        "strict_json",
        "embed",
        "elastic",
        "indices",
        "follow",
        "search",
    },  # fmt: skip
    "cli": {
        "config",
        "errors",
        "metrics",
        "embed",
        "elastic",
        "indices",
        "follow",
        "ingest",
        "provision",
        "search",
        "api",
    },  # fmt: skip
}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


SAME_PART = {"config_checks": "config"}  # one job in two files


def part_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    return SAME_PART.get(part, part)


def imported_parts(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    parts = {n.split(".")[1] for n in names if n.startswith("es_embed.") and n.count(".") >= 1}
    return {SAME_PART.get(p, p) for p in parts}


def test_every_part_is_declared() -> None:
    parts = {part_of(p) for p in modules()} - {"__init__"}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_one_way(path: Path) -> None:
    part = part_of(path)
    if part == "__init__":
        return
    wrong = imported_parts(path) - ALLOWED[part] - {part}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(wrong)}"


def test_the_allowed_graph_has_no_cycles() -> None:
    seen: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert seen.get(node) != 1, f"cycle: {' -> '.join((*trail, node))}"
        if seen.get(node) == 2:
            return
        seen[node] = 1
        for dep in ALLOWED[node]:
            visit(dep, (*trail, node))
        seen[node] = 2

    for node in ALLOWED:
        visit(node, ())


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines; split it"
