"""Mapping raw text to the canonical record: every time unit, reference epochs, bad values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from pandera.errors import SchemaErrors

from pull_pipeline.canonical import to_canonical
from pull_pipeline.config.models import FieldMap, PythonSource
from pull_pipeline.connectors.base import records_to_batch
from pull_pipeline.validation import validate

AT = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
EPOCH_S = AT.timestamp()
EPOCH_NS = 1_714_566_615 * 10**9 + 250_000_000


def source(**overrides: object) -> PythonSource:
    return PythonSource.model_validate({
        "kind": "python", "function": "m:f", "partitions": {"start": "2024-01-01"}, **overrides})


def times(values: list[object], **overrides: object) -> list[pd.Timestamp]:
    src = source(**overrides)
    raw = records_to_batch(
        [{"sensor_tag": "t", "relative_time": v, "sensor_value": 1} for v in values], src.fields)
    return list(to_canonical(raw, src)["ts"])


@pytest.mark.parametrize(
    ("unit", "value"),
    [
        ("s", EPOCH_S),
        ("ms", EPOCH_NS // 10**6),
        ("us", EPOCH_NS // 10**3),
        ("ns", EPOCH_NS),
        ("iso8601", "2024-05-01T12:30:15.250Z"),
        ("iso8601", "2024-05-01T14:30:15.250+02:00"),
    ],
)
def test_every_time_unit_lands_on_the_same_instant(unit: str, value: object) -> None:
    assert times([value], time_unit=unit) == [pd.Timestamp(AT)]


def test_integer_nanoseconds_are_exact() -> None:
    assert times([1_714_566_615_123_456_789], time_unit="ns")[0].value == 1_714_566_615_123_456_789


def test_reference_epoch_offsets_relative_times() -> None:
    assert times([90], reference_epoch="2024-05-01T12:00:00Z") == [
        pd.Timestamp(datetime(2024, 5, 1, 12, 1, 30, tzinfo=UTC))]
    assert times([1.5], time_unit="ms", reference_epoch="2024-05-01T00:00:00Z") == [
        pd.Timestamp(datetime(2024, 5, 1, 0, 0, 0, 1500, tzinfo=UTC))]


def test_unparseable_and_out_of_range_times_become_missing() -> None:
    assert [pd.isna(t) for t in times(["soon", None, 10**30, 1.0])] == [True, True, True, False]
    assert pd.isna(times(["not a date"], time_unit="iso8601")[0])


def test_custom_field_names_and_reasons_name_the_source_field() -> None:
    fields = FieldMap(sensor_tag="tag", relative_time="time", sensor_value="value")
    src = source(fields=fields.model_dump())
    raw = records_to_batch([
        {"tag": "a", "time": EPOCH_S, "value": 1.5},
        {"tag": "a", "time": EPOCH_S + 1, "value": "inf"},
        {"tag": "a", "time": EPOCH_S + 7200, "value": 2},
    ], fields)
    checked = validate(to_canonical(raw, src), raw, fields, AT - timedelta(minutes=30),
                       AT + timedelta(minutes=30))
    assert list(checked.valid["sensor_value"]) == [1.5]
    reasons = list(checked.rejects["reason"])
    assert "value is NaN or infinite (got 'inf')" in reasons[0]
    assert reasons[1].startswith("time is outside the window")
    assert '"tag":"a"' in checked.rejects["raw_row"].iloc[0]


def test_the_tag_column_must_be_arrow_backed_text() -> None:
    """The tag's dtype is checked once for the column (`validation.ArrowText`): mapping
    gives `string[pyarrow]`; a column of Python objects (a mapping bug, not bad data) fails
    the batch's schema instead of passing or being rejected row by row."""
    src = source()
    raw = records_to_batch([{"sensor_tag": "a", "relative_time": EPOCH_S, "sensor_value": 1}],
                           src.fields)
    readings = to_canonical(raw, src)
    window = (AT - timedelta(minutes=1), AT + timedelta(minutes=1))
    assert len(validate(readings, raw, src.fields, *window).valid) == 1
    for wrong in ("object", "string[python]"):
        with pytest.raises(SchemaErrors, match="sensor_tag"):
            validate(readings.astype({"sensor_tag": wrong}), raw, src.fields, *window)
