# pppml-jax: the two commands a new user runs are `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= runs/quickstart
CONFIG  ?= configs/quickstart.yaml

.PHONY: run test test-latest lint format bench benchmark attack real-ct install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip<26"

# Reinstall when the lock file or the project metadata changes.
$(STAMP): $(BIN)/python constraints.txt pyproject.toml
	$(BIN)/pip install --quiet -c constraints.txt -e ".[fhe,dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/pppml run $(CONFIG) --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# The newest JAX release (issue 13): a second venv from a second lock file, numpy 2, no
# concrete-python (needs numpy < 2): a test failing only for want of it is reported as skipped.
LATEST       := .venv-latest
LATEST_STAMP := $(LATEST)/.installed

$(LATEST)/bin/python:
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade "pip<26"

$(LATEST_STAMP): $(LATEST)/bin/python constraints-latest.txt pyproject.toml
	$(LATEST)/bin/pip install --quiet -c constraints-latest.txt -e ".[dev]" tenseal
	touch $(LATEST_STAMP)

test-latest: $(LATEST_STAMP)
	PYTHONPATH=.ci $(LATEST)/bin/python -m pytest -q -n 2 --dist loadfile -p pytest_no_concrete tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# About 30 minutes on 2 cores; each script also takes --json (one JSON object last).
bench: $(STAMP)
	$(BIN)/python benchmarks/client_throughput.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/secure_aggregation.py

# The personalized-FL benchmark (issue 14): every task, both sweeps and the secure costs, then
# EXPERIMENTS.md from their results.json (benchmarks/benchmark_runs.py --list shows the runs).
# Hours on 2 cores: the full tasks are meant for a GPU; BENCH_ONLY=tasks|sweeps|costs, and
# BENCH_SKIP="seg_ct cls3d" leaves runs out. The report alone: make benchmark BENCH_ONLY=none.
# Each finished run's results.json and run.json are copied to BENCH_ARCHIVE (tracked in git);
# the report is written from there, so it covers every run made so far, in any session.
BENCH_OUT  ?= runs/benchmark
BENCH_ARCHIVE ?= benchmarks/experiments
BENCH_ONLY ?= all
BENCH_SKIP ?=
benchmark: $(STAMP)
	if [ "$(BENCH_ONLY)" != none ]; then $(BIN)/python benchmarks/benchmark_runs.py --run \
	  --out $(BENCH_OUT) --archive $(BENCH_ARCHIVE) --only $(BENCH_ONLY) --skip $(BENCH_SKIP); fi
	$(BIN)/python benchmarks/experiments_report.py --runs $(BENCH_ARCHIVE) --out EXPERIMENTS.md

attack: $(STAMP)
	$(BIN)/pppml attack configs/attack.yaml --out runs/attack

real-ct: $(STAMP)
	$(BIN)/pppml data real-ct

clean:
	rm -rf $(VENV) runs .pytest_cache
