# The README's two commands: `make demo` (the main job on an embedded default) and `make test`.
# Both build .venv from pyproject.toml on first use; pip's cache makes later builds fast.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The wheel smoke's own environment: es-embed installed from its wheel, never editable.
WHEEL_VENV ?= .venv-wheel
WHEEL_SMOKE := HF_HUB_OFFLINE=1 $(PY) -m devtools.wheel_smoke --venv $(WHEEL_VENV)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $@

.PHONY: demo test wheel-smoke lint bench-quality
demo: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m devtools.demo

# The installed wheel end to end (devtools/wheel_smoke.py says what it checks), then the
# suite, whose summary line stays the last thing printed.
test: $(VENV)/.installed
	$(WHEEL_SMOKE)
	HF_HUB_OFFLINE=1 $(PY) -m pytest

wheel-smoke: $(VENV)/.installed
	$(WHEEL_SMOKE)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

# The README's quality tables: both datasets into one node (ES_URL, else a fresh one).
bench-quality: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) bench/quality.py --dataset arguana
	HF_HUB_OFFLINE=1 $(PY) bench/quality.py --dataset xquad-r-zh
