# Two commands: `make demo` and `make test`. Both create .venv on first use and install the pinned
# requirements once (a stamp file records it; edit requirements.txt or pyproject.toml to reinstall).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-fast docs docs-serve demo demo-seg demo-cls bench lint clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# One pytest worker per core (at most 4: each holds its own copy of the session fixtures' small trained runs); a test
# file stays on one worker, so its module fixtures are built once. Each worker gets its share of the cores
# (tests/conftest.py).
WORKERS := --numprocesses auto --maxprocesses 4 --dist loadfile

test: $(STAMP) docs
	$(PY) -m pytest -q $(WORKERS) --durations=20

# The documentation site in site/: a broken link, a missing API object or a page left out of the nav fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

test-fast: $(STAMP)
	$(PY) -m pytest -q $(WORKERS) -m "not slow"

demo: $(STAMP)
	$(PY) scripts/demo_detection.py

demo-seg: $(STAMP)
	$(PY) scripts/demo_segmentation.py

demo-cls: $(STAMP)
	$(PY) train_task.py fit --config configs/mobilenetv2_shapes_classification.yaml

bench: $(STAMP)
	$(PY) -m benchmarks.backbone
	$(PY) -m benchmarks.paper_tables
	$(PY) -m benchmarks.detection
	$(PY) -m benchmarks.segmentation

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/basedpyright --pythonpath $(PY)   # imports only: pyproject.toml [tool.basedpyright]

clean:
	rm -rf runs lightning_logs .pytest_cache site .cache
