# Two commands do all the set-up on a fresh machine (see README):
#   make dev    install into .venv and start the Dagster UI with the demo sources
#   make test   install into .venv-test and run the whole test suite
# Tests run on Python 3.12 where the machine has it (what pull-stack users are told to
# use): `python3.12` on the PATH, else pyenv's newest 3.12 (its shim alone fails when 3.12
# is installed but not selected), else python3. Override with `make test TEST_PYTHON=python3.13`.

PYTHON ?= python3
PYENV_312 := $(shell pyenv prefix "$$(pyenv latest 3.12 2>/dev/null)" 2>/dev/null)
TEST_PYTHON ?= $(shell python3.12 -c '' >/dev/null 2>&1 && echo python3.12 \
  || ( [ -x "$(PYENV_312)/bin/python3.12" ] && echo "$(PYENV_312)/bin/python3.12" ) || echo python3)
# The stamp names the Python version, so a test venv built with another version is rebuilt.
TEST_VENV := .venv-test/.installed-$(shell $(TEST_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
STATE := $(CURDIR)/.pull_pipeline
PORT ?= 3000
DEMO_API_PORT ?= 8080

.PHONY: dev test bench lint clean

.venv/.installed: pyproject.toml
	$(PYTHON) -m venv .venv
	.venv/bin/python -m pip install --quiet --upgrade pip
	.venv/bin/python -m pip install --quiet -e '.[dev]'
	touch $@

$(TEST_VENV): pyproject.toml
	rm -rf .venv-test
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

test: $(TEST_VENV)
	.venv-test/bin/python -m pytest -n 2 --dist loadfile -q

bench: .venv/.installed
	.venv/bin/python -m benchmarks.run

lint: .venv/.installed
	.venv/bin/ruff check pull_pipeline pull_pipeline_tests benchmarks

clean:
	rm -rf .venv .venv-test $(STATE)
