# Two commands do all the set-up on a fresh machine (see README):
#   make dev    install into .venv and start the Dagster UI with the demo sources
#   make test   install into .venv-test and run the whole test suite
# Tests run on Python 3.12 where the machine has it (what pull-stack users are told to
# use), else on python3. Override with `make test TEST_PYTHON=python3.13`.

PYTHON ?= python3
TEST_PYTHON ?= $(shell python3.12 -c 'import sys' >/dev/null 2>&1 && echo python3.12 || echo python3)
STATE := $(CURDIR)/.pull_pipeline
PORT ?= 3000
DEMO_API_PORT ?= 8080

.PHONY: dev test bench lint clean

.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	.venv/bin/python -m pip install --quiet --upgrade pip
	.venv/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

.venv-test/.installed: pyproject.toml
	$(TEST_PYTHON) -m venv .venv-test
	.venv-test/bin/python -m pip install --quiet --upgrade pip
	.venv-test/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

dev: .venv/.installed
	mkdir -p $(STATE)/dagster_home
	cp dagster.yaml $(STATE)/dagster_home/dagster.yaml
	.venv/bin/python -m pull_pipeline.demo.sqldb
	DEMO_API_KEY=$${DEMO_API_KEY:-demo-key} .venv/bin/python -m pull_pipeline.demo.api --port $(DEMO_API_PORT) & \
	  api=$$!; trap "kill $$api 2>/dev/null" EXIT INT TERM; \
	  DAGSTER_HOME=$(STATE)/dagster_home DEMO_API_KEY=$${DEMO_API_KEY:-demo-key} \
	  .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

test: .venv-test/.installed
	.venv-test/bin/python -m pytest -n 2 --dist loadfile -q

bench: .venv/.installed
	.venv/bin/python -m benchmarks.run

lint: .venv/.installed
	.venv/bin/ruff check pull_pipeline pull_pipeline_tests benchmarks

clean:
	rm -rf .venv .venv-test $(STATE)
