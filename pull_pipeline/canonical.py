"""Map a raw batch (the source's fields, as text) to the canonical record.

Everything here is columnar: Arrow casts for clean columns, pandas' vectorised parsers for
columns with bad values. Tags stay in Arrow memory (pandas' pyarrow-backed string dtype), so
no Python object is made per row and the sink gets them back without a copy. A value that
cannot be parsed becomes null (NaT/NaN) so that validation rejects that row with its reason,
and the rest of the batch still loads.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pull_pipeline.config.models import SourceBase

TAG_DTYPE = pd.StringDtype("pyarrow")
UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_NS_LIMIT = 9.2e18  # beyond int64 nanoseconds: year 2262
_NAT = np.iinfo("int64").min
# Numbers as JSON, CSV or SQL render them (Arrow's float parser accepts exactly these).
_NUMBER = r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|nan|inf|infinity)$"
# A time of day (after T or a space) ending in Z or a +hh, +hhmm or +hh:mm offset.
_ZONED = r"\d[Tt ]\d.*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)\s*$"


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 instant or date; a value without zone is taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: FURB162 - parsing unchanged
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def to_canonical(raw: pa.Table, config: SourceBase) -> pd.DataFrame:
    """Return `sensor_tag`, `ts` (UTC, ns) and `sensor_value` for every raw row, in order."""
    fields = config.fields
    tags = raw.column(fields.sensor_tag).cast(pa.large_string()).to_pandas(
        types_mapper={pa.large_string(): TAG_DTYPE}.get)
    ts = times(raw.column(fields.relative_time), config)
    values = _numbers(raw.column(fields.sensor_value))
    return pd.DataFrame({"sensor_tag": tags, "ts": ts, "sensor_value": values}, copy=False)


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """The column as doubles, NaN where a value is not a number.

    Arrow parses numbers correctly rounded; pandas' `to_numeric` does not (it can lose the
    last digit of a double), so values that are not numbers are nulled out first and Arrow
    still does the parsing.
    """
    try:
        direct: np.ndarray = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return direct
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    column = pc.utf8_trim_whitespace(column)  # " 1.5" from a padded CSV is still a number
    numeric = pc.match_substring_regex(column, _NUMBER, ignore_case=True)
    kept = pc.if_else(numeric, column, pa.scalar(None, column.type))
    try:
        parsed = kept.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # a form Arrow refuses: slow path
        return np.array([_number(value) for value in column.to_pylist()], dtype="float64")
    doubles: np.ndarray = pc.fill_null(parsed, np.nan).to_numpy(zero_copy_only=False)
    return doubles


def _number(value: str | None) -> float:
    try:
        return float(value) if value is not None else np.nan
    except ValueError:
        return np.nan


def times(column: pa.ChunkedArray, config: SourceBase) -> pd.Series:
    """The `relative_time` column as UTC times (NaT where it cannot be read), per `time_unit`."""
    if config.time_unit == "iso8601":
        return _instants(column)
    unit_ns = UNIT_NS[config.time_unit]
    epoch_ns = pd.Timestamp(parse_instant(config.reference_epoch)).value
    try:
        counts = column.cast(pa.int64())
        valid = pc.fill_null(
            pc.and_(pc.is_valid(counts), pc.less_equal(pc.abs(counts), int(_NS_LIMIT // unit_ns))),
            False,
        ).to_numpy(zero_copy_only=False)
        ints = pc.fill_null(counts, 0).to_numpy(zero_copy_only=False)
        ns = np.where(valid, ints * unit_ns + epoch_ns, _NAT)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        floats = _numbers(column)
        # Fractions are rounded to microseconds (the sink's precision): a double holds
        # microseconds since 1970 exactly, nanoseconds it does not.
        micros = floats * (unit_ns / 1000)
        valid = np.isfinite(micros) & (np.abs(micros * 1000 + epoch_ns) < _NS_LIMIT)
        micros = np.round(np.where(valid, micros, 0)).astype("int64")
        ns = np.where(valid, micros * 1000 + epoch_ns, _NAT)
    return _utc(ns)


def _instants(column: pa.ChunkedArray) -> pd.Series:
    """ISO-8601 text to UTC: Arrow's parser when every value has an offset (or none has one,
    taken as UTC), pandas' for anything else (date-only, basic format, bad values).

    In the pandas path, values with and without an offset are parsed apart: given both in
    one call, pandas gives a zone-less value the offset of the value before it, so the same
    text would load as different instants depending on its neighbours.
    """
    for target in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):
        try:
            parsed = column.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        ns = pc.fill_null(parsed.cast(pa.int64()), _NAT).to_numpy(zero_copy_only=False)
        return _utc(ns)
    text = column.to_pandas()
    zoned = pc.fill_null(pc.match_substring_regex(column, _ZONED), False).to_numpy(
        zero_copy_only=False)
    ns = np.full(len(text), _NAT, dtype="int64")
    for group in (zoned, ~zoned):
        if group.any():
            parsed = pd.to_datetime(text[group], utc=True, errors="coerce", format="ISO8601")
            ns[group] = parsed.to_numpy(dtype="datetime64[ns]").view("int64")
    return _utc(ns)


def _utc(ns: np.ndarray) -> pd.Series:
    """Nanoseconds since the epoch (int64 min = NaT: missing, so rejected) as UTC times.

    Built without the `.dt` accessor, whose cached reference cycle would keep every batch's
    arrays alive until the garbage collector's next full pass.
    """
    return pd.Series(pd.to_datetime(ns, unit="ns", utc=True), copy=False)
