"""The embedded default sink: a PostgreSQL server that pip installs, under the state folder.

With no `sink.dsn` / `SINK_DSN`, a new user still sees a load work before owning a database.
The server binaries come from the `pgserver` wheel (PostgreSQL 16, plain: no TimescaleDB),
which exists for CPython 3.11 and 3.12 only. Its data lives in `<state_dir>/postgres`; it
listens on a unix socket in that folder only (no TCP port to collide with) and keeps running
after the process that started it exits, so Dagster's webserver, daemon and run processes all
share one server. A file lock in the state folder makes concurrent first calls start it once.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from urllib.parse import quote

from pull_pipeline.errors import ConfigError, SinkError

logger = logging.getLogger(__name__)

_announced: set[Path] = set()


def embedded_dsn(state_dir: Path) -> str:
    """Start the embedded server unless it already runs; return its libpq URL (unix socket)."""
    pgserver = _pgserver()
    pgdata = _pgdata(state_dir)
    with _locked(state_dir):
        live = _live(pgdata)
        if live is None:
            pgdata.mkdir(exist_ok=True)
            try:
                pgserver.PostgresServer(pgdata, cleanup_mode=None)
            except (subprocess.SubprocessError, AssertionError, OSError) as exc:
                raise SinkError(
                    f"the embedded PostgreSQL in {pgdata} did not start ({exc}); "
                    f"see {pgdata / 'log'}, or set SINK_DSN to a PostgreSQL/TimescaleDB"
                ) from None
            live = _live(pgdata)
            if live is None:
                raise SinkError(f"the embedded PostgreSQL in {pgdata} started but is not ready")
    if pgdata not in _announced:
        _announced.add(pgdata)
        logger.warning(
            "sink: no sink.dsn or SINK_DSN set, so the embedded PostgreSQL (pgserver, plain "
            "PostgreSQL without TimescaleDB) is used; its data lives in %s. Set SINK_DSN to "
            "load into your own TimescaleDB.", pgdata,
        )
    socket_dir, port = live
    return f"postgresql://postgres@/postgres?host={quote(socket_dir, safe='')}&port={port}"


def stop_embedded(state_dir: Path) -> bool:
    """Stop the embedded server of `state_dir` (its data stays); False if it was not running."""
    pgserver = _pgserver()
    pgdata = _pgdata(state_dir)
    with _locked(state_dir):
        if _live(pgdata) is None:
            return False
        user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs postgres as this user
        pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    _announced.discard(pgdata)
    return True


def available() -> bool:
    """Whether pgserver is installed (CPython 3.11/3.12), without importing it."""
    return importlib.util.find_spec("pgserver") is not None


def is_running(state_dir: Path) -> bool:
    """Whether the embedded server of `state_dir` runs (read-only: it is not started)."""
    return _live(_pgdata(state_dir)) is not None


def psql_command(state_dir: Path) -> list[str]:
    """`psql` on the embedded database (started if needed), from the pgserver wheel.

    The wheel ships its own `psql`, so no PostgreSQL client need be installed.
    """
    dsn = embedded_dsn(state_dir)
    package = _pgserver().__file__ or ""
    return [str(Path(package).parent / "pginstall" / "bin" / "psql"), dsn]


def _pgserver() -> ModuleType:
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pgserver
    except ImportError:
        raise ConfigError(
            "no sink DSN is set and the embedded PostgreSQL needs the pgserver package, which "
            "exists for Python 3.11 and 3.12 only: run on one of those (pip install pgserver), "
            "or set sink.dsn / SINK_DSN to a PostgreSQL or TimescaleDB"
        ) from None
    return pgserver


def _pgdata(state_dir: Path) -> Path:
    return (Path(state_dir) / "postgres").resolve()


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One process at a time starts or stops the server of a state folder."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(state_dir) / "postgres.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _live(pgdata: Path) -> tuple[str, int] | None:
    """The socket folder and port of the server running on `pgdata`, or None.

    A `postmaster.pid` whose process is gone, or is not a postgres on this folder (its pid
    reused after a reboot or a container restart), is stale: it is removed, since postgres
    would otherwise refuse to start.
    """
    import psutil  # a dependency of pgserver

    pid_file = pgdata / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except FileNotFoundError:
        return None
    try:
        process = psutil.Process(int(lines[0]))
        ours = process.name() == "postgres" and str(pgdata) in process.cmdline()
    except (psutil.Error, ValueError, IndexError):
        ours = False
    if not ours:
        pid_file.unlink(missing_ok=True)
        return None
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    return lines[4].strip(), int(lines[3])
