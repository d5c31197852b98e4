# The README's two commands: `make demo` (the main job on an embedded default) and `make test`.
# Both build .venv from pyproject.toml on first use; pip's cache makes later builds fast.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

.PHONY: demo test lint bench-quality
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m devtools.demo

test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

bench-quality: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) bench/quality.py
