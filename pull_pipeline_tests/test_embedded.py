"""The embedded default sink: a pgserver PostgreSQL shared by processes, kept after exit."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pull_pipeline.errors import ConfigError
from pull_pipeline.sink.embedded import embedded_dsn, is_running, psql_command, stop_embedded
from pull_pipeline_tests.conftest import needs_pgserver

# A second process: start-or-reuse the server and report its DSN and the demo table's rows.
CHILD = """
import sys
from pathlib import Path
import psycopg
from pull_pipeline.sink.embedded import embedded_dsn
dsn = embedded_dsn(Path(sys.argv[1]))
with psycopg.connect(dsn) as db:
    rows = db.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'shared'").fetchone()[0]
print(dsn, rows)
"""


def run_child(state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def postmasters(pgdata: Path) -> list[Any]:
    """Postgres server processes (not their workers) running on `pgdata`."""
    import psutil  # installed with pgserver
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and str(pgdata.resolve()) in cmdline:
            found.append(process)
    return found


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    stop_embedded(path)


@needs_pgserver
def test_starts_is_shared_by_other_processes_and_stops(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pull_pipeline.sink.embedded")
    dsn = embedded_dsn(state)
    assert dsn.startswith("postgresql://postgres@/postgres?host=")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE shared (x int)")

    child = run_child(state)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert out.split() == [dsn, "1"]  # same server: it sees the table made here
    assert embedded_dsn(state) == dsn
    with psycopg.connect(dsn) as db:  # still up after the other process exited
        assert db.execute("SELECT 1").fetchone() == (1,)

    announcements = [r for r in caplog.records if str(state / "postgres") in r.getMessage()]
    assert len(announcements) == 1 and "embedded PostgreSQL" in announcements[0].getMessage()

    # `make psql`: the wheel's own psql on the same server, no client installed.
    psql = subprocess.run([*psql_command(state), "-Atc", "SELECT count(*) FROM shared"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert (psql.returncode, psql.stdout) == (0, "0\n"), psql.stderr

    assert is_running(state) is True
    assert stop_embedded(state) is True
    assert is_running(state) is False
    assert postmasters(state / "postgres") == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    assert stop_embedded(state) is False


@needs_pgserver
def test_concurrent_first_calls_start_one_server(state: Path) -> None:
    children = [run_child(state) for _ in range(3)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], [err for _, err in outputs]
    assert len({out for out, _ in outputs}) == 1
    assert len(postmasters(state / "postgres")) == 1


@needs_pgserver
def test_data_survives_a_restart_and_a_stale_pid_file(state: Path) -> None:
    with psycopg.connect(embedded_dsn(state), autocommit=True) as db:
        db.execute("CREATE TABLE kept AS SELECT 42 AS answer")
    stop_embedded(state)
    # After a reboot the old pid may belong to any process: here, this test's own.
    pid_file = state / "postgres" / "postmaster.pid"
    pid_file.write_text(f"{os.getpid()}\n{state / 'postgres'}\n0\n5432\n/tmp\n\n0 0\nready\n")

    with psycopg.connect(embedded_dsn(state)) as db:
        assert db.execute("SELECT answer FROM kept").fetchone() == (42,)


def test_without_pgserver_the_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)  # as on Python 3.13: no wheel
    with pytest.raises(ConfigError, match=r"Python 3\.11 and 3\.12.*SINK_DSN"):
        embedded_dsn(tmp_path)
