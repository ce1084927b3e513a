# The README's two commands: `make demo` and `make test`, on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench dev clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pullmode demo

test: $(STAMP)
	$(BIN)/ruff check pullmode_dagster pullmode_dagster_tests bench
	$(BIN)/ruff format --check pullmode_dagster pullmode_dagster_tests bench
	$(BIN)/pytest -q -n 2 --dist loadscope

lint: $(STAMP)
	$(BIN)/ruff check --fix pullmode_dagster pullmode_dagster_tests bench
	$(BIN)/ruff format pullmode_dagster pullmode_dagster_tests bench

# Issue #13's pull benchmark (full path, engine, plain loop, dlt; HTTP and S3): see bench/pull_bench.py.
# Extra flags: make bench BENCH_ARGS="--sizes 100000 --no-s3 --json out.json". Micro benchmarks: bench/run.py.
# DAEMON=1 then runs issue #20's benchmarks too: what one poller evaluation costs (bench/evaluation_bench.py,
# a minute) and the daemon benchmark (bench/daemon_bench.py, about 30 minutes: quiet sources under
# dagster-daemon, a backlog, the idle pull); its flags: DAEMON_BENCH_ARGS="--quiet 10x2".
bench: $(STAMP)
	$(BIN)/python bench/pull_bench.py $(BENCH_ARGS)
	$(if $(DAEMON),$(BIN)/python bench/evaluation_bench.py)
	$(if $(DAEMON),$(BIN)/python bench/daemon_bench.py $(DAEMON_BENCH_ARGS))

dev: $(STAMP)
	$(BIN)/pullmode demo --ui

clean:
	rm -rf $(VENV) .pullmode .pytest_cache .ruff_cache
