# Two commands do all the set-up on a fresh machine (see README):
#   make dev    install into .venv and start the Dagster UI with the demo sources
#   make test   install into .venv-test and run the whole test suite on PostgreSQL, then the
#               tests that open the sink server again on TimescaleDB
# and a few more:
#   make psql          psql on the embedded PostgreSQL      make stop   stop it
#   make test-browser  the UI flows in chromium (screenshots in .pull_pipeline/screenshots/)
# Tests run on Python 3.12 where the machine has it (what pull-stack users are told to
# use): `python3.12` on the PATH, else pyenv's newest 3.12 (its shim alone fails when 3.12
# is installed but not selected), else python3. Override with `make test TEST_PYTHON=python3.13`.

PYENV_312 := $(shell pyenv prefix "$$(pyenv latest 3.12 2>/dev/null)" 2>/dev/null)
TEST_PYTHON ?= $(shell python3.12 -c '' >/dev/null 2>&1 && echo python3.12 \
  || ( [ -x "$(PYENV_312)/bin/python3.12" ] && echo "$(PYENV_312)/bin/python3.12" ) || echo python3)
# The stamp names the Python version, so a test venv built with another version is rebuilt.
# `make dev` picks its Python the same way: pgserver (the embedded PostgreSQL) has wheels for
# 3.11 and 3.12 only, and on another Python `make dev` says so once, at start-up.
PYTHON ?= $(TEST_PYTHON)
TEST_VENV := .venv-test/.installed-$(shell $(TEST_PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
STATE := $(CURDIR)/.pull_pipeline
PORT ?= 3000
DEMO_API_PORT ?= 8080

.PHONY: dev psql stop test test-browser chromium bench lint clean

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

# `make dev` runs pull_pipeline/devserver.py: it refuses busy ports (naming PORT= or
# DEMO_API_PORT=) and a Python without the embedded PostgreSQL in one line, stops Dagster if
# its UI dies, and on Ctrl-C stops Dagster, the demo API and the embedded PostgreSQL.
dev: .venv/.installed
	@.venv/bin/python -m pull_pipeline.devserver run --port $(PORT) \
	  --demo-api-port $(DEMO_API_PORT) --dagster-home $(STATE)/dagster_home

psql: .venv/.installed
	@.venv/bin/python -m pull_pipeline.devserver psql

stop: .venv/.installed
	@.venv/bin/python -m pull_pipeline.devserver stop

# `make test` runs two passes: the whole suite on plain PostgreSQL (PULL_PIPELINE_TEST_DSN,
# default 127.0.0.1:5432), then on TimescaleDB, where every sink table is a hypertable. The TimescaleDB
# server is $PULL_PIPELINE_TIMESCALE_DSN when set, else the cluster that
# ../shared/timescaledb/cluster.sh starts (as root; idempotent; its last line is the DSN).
# Without either, that pass is skipped with the reason. It runs the tests marked `sink`
# (every test that opens the sink server: see SINK_FIXTURES in pull_pipeline_tests/conftest.py);
# the others never reach it, and ran in the plain pass. `make test TEST_PASSES=plain` (or
# `=timescale`) runs one pass; a pass asked for alone must not be skipped. PYTEST_ARGS adds
# pytest options, e.g. `make test TEST_PASSES=timescale PYTEST_ARGS='-k compressed'`.
TEST_PASSES ?= plain timescale
TIMESCALE_CLUSTER ?= ../shared/timescaledb/cluster.sh
TIMESCALE_PORT ?= 5434
PYTEST_ARGS ?=
PYTEST := .venv-test/bin/python -m pytest -n 2 --dist loadfile -q -rfEs
DESCRIBE := .venv-test/bin/python -m pull_pipeline_tests.conftest

test: $(TEST_VENV) lint
	@plain_dsn="$${PULL_PIPELINE_TEST_DSN:-postgresql://postgres@127.0.0.1:5432/postgres}"; \
	ts_dsn="$${PULL_PIPELINE_TIMESCALE_DSN:-}"; status=0; recap=""; \
	for pass in $(TEST_PASSES); do \
	  case $$pass in \
	  plain) \
	    echo "== suite on $$($(DESCRIBE) "$$plain_dsn") =="; \
	    case " $(TEST_PASSES) " in *" timescale "*) unset PULL_PIPELINE_TIMESCALE_DSN;; esac; \
	    if PULL_PIPELINE_TEST_DSN="$$plain_dsn" $(PYTEST) -m 'not browser' $(PYTEST_ARGS); then result=passed; \
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
	      if PULL_PIPELINE_TEST_DSN="$$ts_dsn" PULL_PIPELINE_TIMESCALE_DSN="$$ts_dsn" \
	         $(PYTEST) -m 'sink and not browser' $(PYTEST_ARGS); \
	      then result=passed; else result=FAILED; status=1; fi; \
	      recap="$$recap\n   TimescaleDB pass: $$result"; \
	    fi;; \
	  *) echo "TEST_PASSES: unknown pass '$$pass' (plain, timescale)"; exit 2;; \
	  esac; \
	done; \
	printf '== make test:%b ==\n' "$$recap"; exit $$status

# The UI flows in a real browser (3-5 minutes, so not in `make test`): `dagster dev` started
# by the tests on free ports with the demo config, driven by Playwright in Debian's chromium,
# installed here when missing (as root; else the tests skip, saying why). Playwright's own
# browser download is not used. A screenshot per step: .pull_pipeline/screenshots/<test>/.
CHROMIUM := /usr/bin/chromium

test-browser: $(TEST_VENV) chromium
	.venv-test/bin/python -m pytest -q -rfEs -m browser --durations=0 $(PYTEST_ARGS) \
	  pull_pipeline_tests/browser

chromium:
	@[ -x $(CHROMIUM) ] || [ "$$(id -u)" != 0 ] || { apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "could not install chromium (apt-get failed): the browser tests will skip"

bench: .venv/.installed
	.venv/bin/python -m benchmarks.run

# `make bench-compressed` loads a new window, and reruns one, next to HISTORY_DAYS days of
# compressed history on TimescaleDB: $PULL_PIPELINE_TIMESCALE_DSN when set, else the
# cluster that $(TIMESCALE_CLUSTER) starts. `make bench-fleet SOURCES=1,50,200` measures the
# code location, the ticks, one run worker and a backfill with that many generated sources;
# `make bench-daemon SOURCES=500 MINUTES=12` runs the real dagster-daemon against that many
# and counts every sensor's ticks; `make bench-backfill` compares a long ranged run with one
# big window. BENCH_ARGS adds options to any, e.g. BENCH_ARGS='--json out.json'.
SOURCES ?= 1,50,200,500
HISTORY_DAYS ?= 60
BENCH_ARGS ?=
.PHONY: bench-compressed bench-fleet bench-daemon bench-backfill
MINUTES ?= 12
comma := ,

bench-compressed: .venv/.installed
	@dsn="$${PULL_PIPELINE_TIMESCALE_DSN:-}"; \
	if [ -z "$$dsn" ]; then \
	  out=$$($(TIMESCALE_CLUSTER) $(TIMESCALE_PORT)) || exit 1; \
	  dsn=$$(printf '%s\n' "$$out" | tail -n 1); \
	fi; \
	.venv/bin/python -m benchmarks.compressed --sink-dsn "$$dsn" \
	  --history-days $(HISTORY_DAYS) $(BENCH_ARGS)

bench-fleet: .venv/.installed
	.venv/bin/python -m benchmarks.fleet --sources $(SOURCES) $(BENCH_ARGS)

bench-backfill: .venv/.installed
	.venv/bin/python -m benchmarks.backfill $(BENCH_ARGS)

bench-daemon: .venv/.installed
	.venv/bin/python -m benchmarks.daemon --sources $(lastword $(subst $(comma), ,$(SOURCES))) \
	  --minutes $(MINUTES) $(BENCH_ARGS)

# `make lint`, which `make test` runs first: ruff (style), then mypy (types) with the
# [tool.mypy] settings and file list of pyproject.toml. Any finding fails it.
lint: $(TEST_VENV)
	.venv-test/bin/ruff check pull_pipeline pull_pipeline_tests benchmarks
	.venv-test/bin/mypy --cache-dir .venv-test/.mypy_cache

clean:
	rm -rf .venv .venv-test $(STATE)
