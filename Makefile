# vae-audit: `make demo` runs the main job on the built-in data, `make test` runs the tests.
# Both install what they need into $(VENV) first. People with CUDA override TORCH_SPEC, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install check test demo bench bench-search reference-reports clean

install: $(STAMP)

# torch goes in first and pinned: the package's own range is then already satisfied, so pip
# never replaces the CPU build with a multi-gigabyte CUDA one.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test,dev]"
	touch $(STAMP)

# Lint, format and types: ruff and mypy as configured in pyproject.toml (CI runs this before the tests).
check: install
	$(VENV)/bin/ruff check auditor tests benchmarks examples
	$(VENV)/bin/ruff format --check auditor tests benchmarks examples
	$(VENV)/bin/mypy

test: install
	$(PY) -m pytest

demo: install
	$(PY) -m auditor.cli.demo --out build/demo

# Floor / ours / naive timings and peak memory on synthetic data at K = 10, 100 and 200 (about
# an hour on 2 CPU cores at the default 9 repeats); results in benchmarks/results/.
# Options: $(PY) benchmarks/bench_certify.py --help
bench: install
	$(PY) benchmarks/bench_certify.py $(BENCH_ARGS)

# `audit teacher search` at 50,000 × 3×32×32 with K up to 200, timed step by step.
bench-search: install
	$(PY) benchmarks/bench_search.py $(BENCH_ARGS)

# Reference certificates of the committed checkpoints (reports/digits/certificates/<stem>/), on
# digits' test split. Exit code 1 (not certified) is an expected outcome here, not a failure.
reference-reports: install
	for model in models/digits/*.safetensors; do \
	  stem=$$(basename $$model .safetensors); \
	  $(PY) -m auditor certify --model $$model --teacher models/digits/teacher.pt --data digits \
	    --split test --out reports/digits/certificates/$$stem --quiet || test $$? -eq 1 || exit 1; \
	done

clean:
	rm -rf build .pytest_cache
