"""The sink contract, against the real PostgreSQL: replace, dedup, rejects, atomicity, DDL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest

from pull_pipeline.errors import SinkError
from pull_pipeline.sink import timescale
from pull_pipeline.sink.pgcopy import encode_readings, write_binary
from pull_pipeline.sink.runs import prepare
from pull_pipeline.sink.timescale import TimescaleSink, Window, create_schema, normalize_dsn

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = Window("2024-01-01-00:00", T0, T0 + timedelta(hours=1))


def frame(n: int, start: datetime = T0, tags: int = 2, value: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sensor_tag": [f"s{i % tags}" for i in range(n)],
            "ts": pd.to_datetime([start + timedelta(seconds=i // tags) for i in range(n)], utc=True),
            "sensor_value": [value + i for i in range(n)],
        }
    )


def rows(dsn: str, table: str, source: str = "src") -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT sensor_tag, ts, sensor_value FROM {table} WHERE source = %s "
            "ORDER BY sensor_tag, ts", (source,)
        ).fetchall()


@pytest.fixture
def sink(pg_dsn: str, table_name: str) -> TimescaleSink:
    return TimescaleSink(dsn=pg_dsn, table=table_name)


def test_replace_window_is_idempotent(sink: TimescaleSink, pg_dsn: str, table_name: str) -> None:
    for _ in range(2):
        with sink.load("src", [HOUR]) as load:
            load.stage(frame(100))
        assert load.result.loaded == 100
    assert len(rows(pg_dsn, table_name)) == 100


def test_replace_only_touches_its_source_and_window(
    sink: TimescaleSink, pg_dsn: str, table_name: str
) -> None:
    next_hour = Window("2024-01-01-01:00", HOUR.end, HOUR.end + timedelta(hours=1))
    with sink.load("src", [HOUR, next_hour]) as load:
        load.stage(frame(10))
        load.stage(frame(10, start=HOUR.end))
    with sink.load("other", [HOUR]) as load:
        load.stage(frame(4))
    with sink.load("src", [HOUR]) as load:  # the hour now has fewer rows at the source
        load.stage(frame(2, value=100.0))
    assert load.result.previous == 10  # counted by the pipelined DELETE: the hour's rows only
    with sink.load("src", [HOUR, next_hour]) as both:  # one DELETE per window, both counted
        both.stage(frame(2, value=100.0))
        both.stage(frame(10, start=HOUR.end))
    assert both.result.previous == 12
    src = rows(pg_dsn, table_name)
    assert len(src) == 12
    assert [r[2] for r in src if r[1] < HOUR.end] == [100.0, 101.0]
    assert len(rows(pg_dsn, table_name, "other")) == 4


def test_duplicates_in_a_batch_are_counted_not_loaded(sink: TimescaleSink) -> None:
    batch = frame(10)
    with sink.load("src", [HOUR]) as load:
        load.stage(pd.concat([batch, batch.iloc[:3]]))
    assert (load.result.staged, load.result.loaded, load.result.deduplicated) == (13, 10, 3)


def test_a_prepared_window_loads_as_a_staged_one(
    sink: TimescaleSink, pg_dsn: str, table_name: str
) -> None:
    """A window sorted and encoded ahead (on the validating thread) loads, deduplicates and
    counts exactly as the same rows staged in the transaction."""
    batch = pd.concat([frame(10), frame(3, value=50.0)])  # three keys twice: first copy wins
    with sink.load("staged", [HOUR]) as staged:
        staged.stage(batch)
    prepared = prepare(batch, "src")
    assert prepared is not None and prepared.staged == 13
    with sink.load("src", [HOUR]) as load:
        load.stage_prepared(prepared)
    assert (load.result.staged, load.result.loaded, load.result.deduplicated) == (
        staged.result.staged, staged.result.loaded, staged.result.deduplicated) == (13, 10, 3)
    assert rows(pg_dsn, table_name) == rows(pg_dsn, table_name, "staged")
    assert prepare(frame(0), "src") is None
    with pytest.raises(ValueError, match="prepared for source src"), sink.load(
            "other", [HOUR]) as elsewhere:
        elsewhere.stage_prepared(prepared)  # its COPY rows say `src`: refused, not loaded
    with pytest.raises(ValueError, match="only rows"), sink.load("src", [HOUR]) as again:
        again.stage(frame(2))
        again.stage_prepared(prepared)
    with pytest.raises(ValueError, match="only rows"), sink.load("src", [HOUR]) as after:
        after.stage_prepared(prepared)
        after.stage(frame(2))  # would be dropped by `finish`: refused instead
    assert len(rows(pg_dsn, table_name)) == 10  # the failed load left the window as it was


@pytest.fixture(params=["one_run", "run_per_batch"])
def runs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Batches sorted together into one COPY (the default for windows up to 1M rows), or
    each batch its own run, as in a bigger window: repeats across runs take another path."""
    if request.param == "run_per_batch":
        monkeypatch.setattr(timescale, "_RUN_ROWS", 1)
    return str(request.param)


def test_a_reading_repeated_in_a_later_batch_keeps_its_first_copy(
    sink: TimescaleSink, pg_dsn: str, table_name: str, runs: str
) -> None:
    with sink.load("src", [HOUR]) as load:
        load.stage(frame(10))
        load.stage(frame(4, value=50.0))  # the same four keys again, other values
        load.stage(frame(6, start=T0 + timedelta(minutes=10)))  # after the switch: still loads
    assert (load.result.staged, load.result.loaded, load.result.deduplicated) == (20, 16, 4)
    assert [r[2] for r in rows(pg_dsn, table_name)][:4] == [1.0, 3.0, 5.0, 7.0]


def test_many_overlapping_batches_in_one_load_all_arrive(
    sink: TimescaleSink, pg_dsn: str, table_name: str, runs: str
) -> None:
    with sink.load("src", [HOUR]) as load:  # more than the load's savepoint budget
        for i in range(40):  # each batch's times and keys overlap every other's
            times = [T0 + timedelta(seconds=i), T0 + timedelta(minutes=30, seconds=i)]
            load.stage(pd.DataFrame({"sensor_tag": ["a", "z"], "ts": pd.to_datetime(times),
                                     "sensor_value": [1.0, 2.0]}))
    assert load.result.loaded == 80
    assert len(rows(pg_dsn, table_name)) == 80


def test_rejects_replace_per_window_and_keep_reason(
    sink: TimescaleSink, pg_dsn: str, table_name: str
) -> None:
    rejects = pd.DataFrame({"raw_row": ['{"sensor_value": "abc"}'], "reason": ["not a number"]})
    for _ in range(3):
        with sink.load("src", [HOUR], run_id="run-1") as load:
            load.quarantine(rejects, HOUR)
    with psycopg.connect(pg_dsn) as conn:
        stored = conn.execute(
            f"SELECT source, partition_key, raw_row, reason, run_id FROM {table_name}_rejects"
        ).fetchall()
    assert stored == [("src", HOUR.key, '{"sensor_value": "abc"}', "not a number", "run-1")]
    with sink.load("src", [HOUR], replace_rejects=False) as load:  # as a restore does
        load.stage(frame(3))
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table_name}_rejects").fetchone() == (1,)


def test_keep_previous_rows_still_records_rejects(
    sink: TimescaleSink, pg_dsn: str, table_name: str
) -> None:
    with sink.load("src", [HOUR]) as load:
        load.stage(frame(5))
    with sink.load("src", [HOUR]) as load:
        load.stage(frame(1, value=99.0))
        load.quarantine(pd.DataFrame({"raw_row": ["{}"], "reason": ["bad"]}), HOUR)
        load.keep_previous_rows()
    assert len(rows(pg_dsn, table_name)) == 5
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table_name}_rejects").fetchone() == (1,)


def test_failure_mid_load_leaves_previous_window(
    sink: TimescaleSink, pg_dsn: str, table_name: str
) -> None:
    with sink.load("src", [HOUR]) as load:
        load.stage(frame(5))
    with pytest.raises(RuntimeError), sink.load("src", [HOUR]) as load:
        load.stage(frame(50))
        raise RuntimeError("connection dropped while streaming")
    assert len(rows(pg_dsn, table_name)) == 5


def test_unreachable_sink_fails_clearly_without_password(table_name: str) -> None:
    sink = TimescaleSink(dsn="postgresql://writer:s3cr3t-pw@127.0.0.1:1/db", table=table_name)
    with pytest.raises(SinkError) as error, sink.load("src", [HOUR]):
        pass
    assert "cannot connect to the sink" in str(error.value)
    assert "previous data is untouched" in str(error.value)
    assert "s3cr3t-pw" not in str(error.value)
    assert error.value.transient  # recovery retries windows that failed on a sink outage


def test_dsn_from_environment_and_sqlalchemy_style(
    pg_dsn: str, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SINK_DSN", pg_dsn.replace("postgresql://", "postgresql+psycopg://"))
    sink = TimescaleSink(dsn="${TEST_SINK_DSN}", table=table_name)
    with sink.load("src", [HOUR]) as load:
        load.stage(frame(3))
    assert len(rows(pg_dsn, table_name)) == 3
    assert normalize_dsn("postgres://a@b/c") == "postgresql://a@b/c"


def test_missing_dsn_variable_names_it(table_name: str) -> None:
    sink = TimescaleSink(dsn="${NOT_SET_ANYWHERE_DSN}", table=table_name)
    with pytest.raises(Exception, match="NOT_SET_ANYWHERE_DSN"):
        sink.resolved_dsn()


def test_schema_qualified_table(pg_dsn: str, table_name: str) -> None:
    sink = TimescaleSink(dsn=pg_dsn, table=f"metrics_{table_name}.readings")
    with sink.load("src", [HOUR]) as load:
        load.stage(frame(2))
    assert len(rows(pg_dsn, f"metrics_{table_name}.readings")) == 2


def test_concurrent_first_runs_create_schema_once(pg_dsn: str, table_name: str) -> None:
    sink = TimescaleSink(dsn=pg_dsn, table=table_name)
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def create() -> None:
        try:
            with psycopg.connect(pg_dsn) as conn:
                barrier.wait()
                create_schema(conn, sink)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(rows(pg_dsn, table_name)) == 0


def test_plain_postgresql_is_reported_once(
    sink: TimescaleSink, caplog: pytest.LogCaptureFixture, pg_dsn: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        has_timescale = conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if has_timescale:
        pytest.skip("this database has TimescaleDB; the plain-table message does not apply")
    with caplog.at_level("WARNING", logger="pull_pipeline.sink"):
        for _ in range(2):
            with sink.load("src", [HOUR]) as load:
                load.stage(frame(1))
    messages = [r.getMessage() for r in caplog.records if "plain PostgreSQL" in r.getMessage()]
    assert len(messages) == 1


def window_delete_plan(conn: psycopg.Connection, table: str, window: Window) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of a window's delete, rolled back."""
    conn.execute(f"ANALYZE {table}")
    row = conn.execute(
        f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) DELETE FROM {table} "
        "WHERE source = 'src' AND ts >= %s AND ts < %s", (window.start, window.end)).fetchone()
    conn.rollback()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def test_plain_table_finds_a_window_without_scanning_the_source_even_after_re_pulls(
    sink: TimescaleSink, pg_dsn: str, table_name: str
) -> None:
    """The window delete reads the window's rows only: not the source's whole history (no
    chunks to exclude), not its whole primary key (which leads with source), and no more
    after a tenth of the history was re-pulled (a BRIN index on ts read 3.7x more then)."""
    days = [Window(f"d{d}", HOUR.start + timedelta(days=d), HOUR.start + timedelta(days=d + 1))
            for d in range(30)]
    with psycopg.connect(pg_dsn) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            pytest.skip("this database has TimescaleDB: chunk exclusion finds the window")

    def pull(day: Window) -> None:  # 8 sensors every 60 s, as the load sends them
        with sink.load("src", [day]) as load:
            load.stage(pd.DataFrame({
                "sensor_tag": np.repeat([f"h{s}" for s in range(8)], 1440),
                "ts": list(pd.date_range(day.start, day.end, freq="60s", inclusive="left")) * 8,
                "sensor_value": 0.0}))

    for day in days:
        pull(day)
    with psycopg.connect(pg_dsn) as conn:
        first = window_delete_plan(conn, table_name, days[12])
    for day in days[1::10] + days[5::10]:  # 6 of 30 days pulled again
        pull(day)
    with psycopg.connect(pg_dsn) as conn:
        later = window_delete_plan(conn, table_name, days[12])
    scan = later["Plans"][0]
    assert scan.get("Index Name") == f"{table_name}_source_ts_idx" or \
        scan["Plans"][0]["Index Name"] == f"{table_name}_source_ts_idx", later
    blocks = [p["Shared Hit Blocks"] + p["Shared Read Blocks"] for p in (first, later)]
    assert blocks[1] <= 2 * blocks[0], blocks
    assert first["Plans"][0]["Actual Rows"] == later["Plans"][0]["Actual Rows"] == 8 * 1440


def test_binary_copy_round_trips_any_tag_time_and_value(pg_dsn: str) -> None:
    tags = pa.array(["température_é", "", "x" * 300, "tab\tnew\nline"], type=pa.large_string())
    times = [datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC),
             datetime(2000, 1, 1, tzinfo=UTC), T0,
             datetime(2262, 1, 1, tzinfo=UTC)]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    ts_us = np.array([(t - epoch) // timedelta(microseconds=1) for t in times], dtype=np.int64)
    values = np.array([-0.0, 1e-310, 1.7976931348623157e308, 22.5])
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TEMP TABLE t (source text, sensor_tag text, ts timestamptz, v float8)")
        with conn.cursor().copy("COPY t FROM STDIN (FORMAT binary)") as copy:
            write_binary(copy, encode_readings(tags, ts_us, values, source="src_ü"))
        stored = conn.execute("SELECT source, sensor_tag, ts, v FROM t").fetchall()
    assert stored == [("src_ü", tag, ts, value)
                      for tag, ts, value in zip(tags.to_pylist(), times, values.tolist())]
