"""The templates have one source, inside the package, and the wheel is told to ship them.

The top-level ``mappings/*.json`` (what a user opens to paste into Dev Tools) must be links
to ``es_embed/provision/templates/*.json``, never copies that could drift; setup reads the
packaged files through ``importlib.resources``, which is what works from an installed wheel
(``devtools/wheel_smoke.py``, run by ``make test``, proves the installed side end to end).
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

import es_embed
from es_embed.provision import templates

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(es_embed.__file__).resolve().parent
PACKAGED = PACKAGE / "provision" / "templates"
MAPPINGS = ROOT / "mappings"
NAMES = sorted(p.name for p in PACKAGED.glob("*.json"))


def test_the_package_has_the_two_templates_setup_reads() -> None:
    assert NAMES == sorted([templates.COMPONENT_FILE, templates.INDEX_TEMPLATE_FILE])


def test_mappings_holds_a_link_to_each_packaged_template_and_nothing_else() -> None:
    assert sorted(p.name for p in MAPPINGS.iterdir()) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_each_mappings_file_is_a_link_resolving_to_the_packaged_file(name: str) -> None:
    link = MAPPINGS / name
    assert link.is_symlink(), f"mappings/{name} must link to the packaged template, not copy it"
    assert link.resolve() == PACKAGED / name
    assert link.read_bytes() == (PACKAGED / name).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_read_request_finds_the_packaged_file_through_importlib_resources(name: str) -> None:
    # TEMPLATES comes from importlib.resources.files(), not from a path relative to the repo.
    assert Path(str(templates.TEMPLATES)).resolve() == PACKAGED
    req = templates.read_request(name)
    text = (PACKAGED / name).read_text(encoding="utf-8")
    head, _, body = text.lstrip().partition("\n")
    assert f"{req.method} {req.path}" == head.strip()
    assert req.body == json.loads(body)


def _package_data_globs() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(pyproject["tool"]["setuptools"]["package-data"]["es_embed"])


def test_pyproject_package_data_ships_every_non_python_file_of_the_package() -> None:
    data = [
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    assert "py.typed" in data and f"provision/templates/{templates.COMPONENT_FILE}" in data
    globs = _package_data_globs()
    unshipped = [f for f in data if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert unshipped == [], f"add to [tool.setuptools.package-data]: {unshipped}"
