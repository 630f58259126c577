# Two commands do all the set-up on a fresh machine (see README):
#   make dev    install into .venv and start the Dagster UI with the demo sources
#   make test   install into .venv-test and run the whole test suite (PostgreSQL, then TimescaleDB)
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

# `make test` runs the whole suite twice: on plain PostgreSQL (PULL_PIPELINE_TEST_DSN, default
# 127.0.0.1:5432), then on TimescaleDB, where every sink table is a hypertable. The TimescaleDB
# server is $PULL_PIPELINE_TIMESCALE_DSN when set, else the cluster that
# ../shared/timescaledb/cluster.sh starts (as root; idempotent; its last line is the DSN).
# Without either, that pass is skipped with the reason. `make test TEST_PASSES=plain` (or
# `=timescale`) runs one pass; a pass asked for alone must not be skipped. PYTEST_ARGS adds
# pytest options, e.g. `make test TEST_PASSES=timescale PYTEST_ARGS='-k sink'`.
TEST_PASSES ?= plain timescale
TIMESCALE_CLUSTER ?= ../shared/timescaledb/cluster.sh
TIMESCALE_PORT ?= 5434
PYTEST_ARGS ?=
PYTEST := .venv-test/bin/python -m pytest -n 2 --dist loadfile -q -rfEs $(PYTEST_ARGS)
DESCRIBE := .venv-test/bin/python -m pull_pipeline_tests.conftest

test: $(TEST_VENV)
	@plain_dsn="$${PULL_PIPELINE_TEST_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}"; \
	ts_dsn="$${PULL_PIPELINE_TIMESCALE_DSN:-}"; status=0; recap=""; \
	for pass in $(TEST_PASSES); do \
	  case $$pass in \
	  plain) \
	    echo "== suite on $$($(DESCRIBE) "$$plain_dsn") =="; \
	    case " $(TEST_PASSES) " in *" timescale "*) unset PULL_PIPELINE_TIMESCALE_DSN;; esac; \
	    if PULL_PIPELINE_TEST_DSN="$$plain_dsn" $(PYTEST); then result=passed; \
	    else result=FAILED; status=1; fi; \
	    recap="$$recap\n   plain pass: $$result";; \
	  timescale) \
	    why=""; \
	    if [ -z "$$ts_dsn" ]; then \
	      if [ ! -x "$(TIMESCALE_CLUSTER)" ]; then \
	        why="$(TIMESCALE_CLUSTER) not found; set PULL_PIPELINE_TIMESCALE_DSN=postgresql://... to use your TimescaleDB"; \
	      elif [ "$$(id -u)" != 0 ]; then \
	        why="$(TIMESCALE_CLUSTER) needs root; set PULL_PIPELINE_TIMESCALE_DSN=postgresql://... to use your TimescaleDB"; \
	      elif out=$$($(TIMESCALE_CLUSTER) $(TIMESCALE_PORT)); then ts_dsn=$$(printf '%s\n' "$$out" | tail -n 1); \
	      else why="$(TIMESCALE_CLUSTER) $(TIMESCALE_PORT) failed (exit $$?; its messages are above)"; fi; \
	    fi; \
	    if [ -z "$$why" ] && ! described=$$($(DESCRIBE) --require-timescale "$$ts_dsn"); then \
	      why="$${described:-could not describe the TimescaleDB server}"; fi; \
	    if [ -n "$$why" ]; then \
	      echo "== TimescaleDB pass SKIPPED: $$why =="; \
	      recap="$$recap\n   TimescaleDB pass: skipped ($$why)"; \
	      [ "$(strip $(TEST_PASSES))" = timescale ] && status=1; \
	    else \
	      echo "== suite on $$described =="; \
	      if PULL_PIPELINE_TEST_DSN="$$ts_dsn" PULL_PIPELINE_TIMESCALE_DSN="$$ts_dsn" $(PYTEST); \
	      then result=passed; else result=FAILED; status=1; fi; \
	      recap="$$recap\n   TimescaleDB pass: $$result"; \
	    fi;; \
	  *) echo "TEST_PASSES: unknown pass '$$pass' (plain, timescale)"; exit 2;; \
	  esac; \
	done; \
	printf '== make test:%b ==\n' "$$recap"; exit $$status

bench: .venv/.installed
	.venv/bin/python -m benchmarks.run

lint: .venv/.installed
	.venv/bin/ruff check pull_pipeline pull_pipeline_tests benchmarks

clean:
	rm -rf .venv .venv-test $(STATE)
