"""Property-based tests of mapping, validation and the load (hypothesis).

For any batch of records — mixed time formats and offsets, odd numbers, booleans, NULs,
blank and oversized tags, repeated keys — the pipeline must agree with a plain, row-by-row
reference parser: every row is loaded, rejected or deduplicated (none lost, none invented),
every loaded row equals the reference's reading of it, and no valid row is rejected.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pull_pipeline.canonical import to_canonical
from pull_pipeline.config.models import PythonSource
from pull_pipeline.connectors.base import records_to_batch
from pull_pipeline.sink.runs import RunBuffer
from pull_pipeline.sink.timescale import TimescaleSink, Window
from pull_pipeline.validation import MAX_TAG_BYTES, validate

START = datetime(2024, 1, 1, tzinfo=UTC)
END = START + timedelta(days=1)
WINDOW = Window("2024-01-01", START, END)
Key = tuple[str, datetime]


def source(time_unit: str) -> PythonSource:
    return PythonSource(kind="python", function="m:f", time_unit=time_unit,  # type: ignore[arg-type]
                        partitions={"start": "2024-01-01"})  # type: ignore[arg-type]


# --- generated records ---------------------------------------------------------------------------

tags = st.one_of(
    st.sampled_from(["s1", "s2", "pump-7", "ümlaut", "  padded  "]),
    st.text(min_size=0, max_size=12),  # blanks, whitespace, NULs, any code point
    st.sampled_from(["", "   ", "a\x00b", "x" * (MAX_TAG_BYTES + 1), "é" * 600]),
    st.none(),
)
epoch_seconds = st.one_of(
    st.integers(int((START - timedelta(hours=2)).timestamp()),
                int((END + timedelta(hours=2)).timestamp())),
    st.floats(START.timestamp() - 10, END.timestamp() + 10, allow_nan=False),
    st.sampled_from([True, False, None, "soon", 10**30, float("nan")]),
)
offsets = st.sampled_from(["", "Z", "+00:00", "+05:00", "-03:00", "+05:30", "-11:00"])
iso_times = st.one_of(
    st.builds(
        lambda moment, offset, micros: (moment.replace(microsecond=micros).isoformat() + offset
                                        if micros else moment.isoformat() + offset),
        st.datetimes(min_value=datetime(2023, 12, 31, 12), max_value=datetime(2024, 1, 2, 12)
                     ).map(lambda d: d.replace(microsecond=0)),
        offsets,
        st.sampled_from([0, 0, 500_000, 123_456]),
    ),
    st.sampled_from(["2024-01-01", "2023-12-31", "not a time", "", None, True, 1704067200]),
)
values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([True, False, None, "n/a", ""]),
)


def records(times: st.SearchStrategy[Any]) -> st.SearchStrategy[list[dict[str, Any]]]:
    record = st.fixed_dictionaries(
        {"sensor_tag": tags, "relative_time": times, "sensor_value": values})
    # Repeats of earlier records (same key, maybe another value) exercise deduplication.
    return st.lists(record, min_size=1, max_size=40).flatmap(
        lambda rows: st.lists(st.sampled_from(rows), max_size=5).map(
            lambda repeats: rows + [{**r, "sensor_value": 1.5} for r in repeats]))


# --- the reference: one row at a time, in plain Python ------------------------------------------


def reference_tag(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        return None
    return value if len(value.encode()) <= MAX_TAG_BYTES else None


def reference_time(value: Any, time_unit: str) -> datetime | None:
    if isinstance(value, bool) or value is None:
        return None
    if time_unit == "iso8601":
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    elif isinstance(value, int):
        if abs(value) > 9e9:
            return None
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, float) and math.isfinite(value):
        micros = round(value * 1_000_000)
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    else:
        return None
    return moment if START <= moment < END else None


def reference_value(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def reference(rows: list[dict[str, Any]], time_unit: str) -> tuple[dict[Key, float], int, int]:
    """Loaded readings by key (first copy wins), rejected count, deduplicated count."""
    loaded: dict[Key, float] = {}
    rejected = deduplicated = 0
    for row in rows:
        tag = reference_tag(row["sensor_tag"])
        ts = reference_time(row["relative_time"], time_unit)
        value = reference_value(row["sensor_value"])
        if tag is None or ts is None or value is None:
            rejected += 1
        elif (tag, ts) in loaded:
            deduplicated += 1
        else:
            loaded[(tag, ts)] = value
    return loaded, rejected, deduplicated


# --- the pipeline's answer -------------------------------------------------------------------------


def pipeline(rows: list[dict[str, Any]], time_unit: str) -> tuple[dict[Key, float], int, int]:
    """What mapping, validation and the sink's run (sorted, first copy wins) make of `rows`."""
    config = source(time_unit)
    raw = records_to_batch(rows, config.fields)
    checked = validate(to_canonical(raw, config), raw, config.fields, START, END)
    buffer = RunBuffer()
    buffer.add(checked.valid)
    run = buffer.take()
    loaded: dict[Key, float] = {}
    if run is not None:
        for tags_, ts_us, vals in run.slices():
            for tag, micros, value in zip(tags_.to_pylist(), ts_us, vals, strict=True):
                moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))
                loaded[(tag, moment)] = float(value)
    deduplicated = len(checked.valid) - len(loaded)
    assert len(checked.valid) + checked.rejected == len(rows)
    return loaded, checked.rejected, deduplicated


@pytest.mark.parametrize(("time_unit", "times"), [("s", epoch_seconds), ("iso8601", iso_times)])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_row_is_loaded_rejected_or_deduplicated_as_the_reference_says(
    time_unit: str, times: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    rows = data.draw(records(times))
    expected, rejected, deduplicated = reference(rows, time_unit)
    got, got_rejected, got_deduplicated = pipeline(rows, time_unit)
    assert len(got) + got_rejected + got_deduplicated == len(rows)
    assert got == expected  # every loaded row, exactly; so no valid row was rejected
    assert (got_rejected, got_deduplicated) == (rejected, deduplicated)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=records(iso_times))
def test_the_sink_holds_exactly_the_reference_rows(rows: list[dict[str, Any]], pg_dsn: str) -> None:
    table = f"prop_{uuid.uuid4().hex[:8]}"
    config = source("iso8601")
    raw = records_to_batch(rows, config.fields)
    checked = validate(to_canonical(raw, config), raw, config.fields, START, END)
    sink = TimescaleSink(dsn=pg_dsn, table=table)
    with sink.load("prop", [WINDOW]) as load:
        load.stage(checked.valid)
        load.quarantine(checked.rejects, WINDOW)
    expected, rejected, _ = reference(rows, "iso8601")
    with psycopg.connect(pg_dsn) as conn:
        stored = {(tag, ts): value for tag, ts, value in conn.execute(
            f"SELECT sensor_tag, ts, sensor_value FROM {table}").fetchall()}
        kept = conn.execute(f"SELECT count(*) FROM {table}_rejects").fetchone()
        conn.execute(f"DROP TABLE {table}, {table}_rejects")
    assert stored == expected
    assert kept is not None and kept[0] == rejected
    if expected:  # an empty batch keeps nothing to replace: nothing to count
        assert load.result.loaded + load.result.rejected + load.result.deduplicated == len(rows)
