"""`check` for one source: reach it, pull the first page of a recent window, and say what
is wrong in the words of sources.yaml (which key, which value, which variable).

REST is read through `sampling.rest_first_page` so the whole first record and the lists
in the answer can be named; the other kinds go through their connector's `probe` and the
first batch of its `fetch`. Nothing is retried: a check should answer in seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from pull_pipeline.canonical import parse_instant
from pull_pipeline.cli.guess import (
    UNIT_NAMES,
    describe_lists,
    guess_records_path,
    suggest_field,
    time_unit_problem,
)
from pull_pipeline.cli.output import Row, Status
from pull_pipeline.cli.sampling import rest_first_page, sql_sample, sql_url
from pull_pipeline.cli.windows import RecentWindow, last_complete_window
from pull_pipeline.config.env import PLACEHOLDER, resolve_env
from pull_pipeline.config.models import RestSource, SourceBase, SqlSource
from pull_pipeline.connectors import make_connector
from pull_pipeline.connectors.base import find_records, records_to_batch
from pull_pipeline.connectors.rest.paths import dig
from pull_pipeline.errors import PullPipelineError, SourceError

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def probe_source(name: str, config: SourceBase, now: datetime) -> Row:
    """One row: reachability, TLS, auth, first page, field mapping and time unit."""
    window = last_complete_window(config.partitions, now)
    row = Row(name, f"{config.kind} {_target(config)}, window {_label(window)}")
    try:
        resolved = resolve_env(config, where=f"source {name!r}")
        if isinstance(resolved, RestSource):
            _probe_rest(row, name, config, resolved, window, now)
        else:
            _probe_connector(row, name, config, resolved, window, now)
    except PullPipelineError as exc:
        row.add(Status.FAIL, _own(exc, name))
    except Exception as exc:  # noqa: BLE001 - one broken source must not hide the others' rows
        row.add(Status.FAIL, f"unexpected {type(exc).__name__}: {exc}")
    return row


def _probe_rest(row: Row, name: str, raw: SourceBase, config: RestSource,
                window: RecentWindow, now: datetime) -> None:
    https = config.url.lower().startswith("https://")
    try:
        page = rest_first_page(name, config, window.start, window.end)
    except SourceError as exc:
        message = _own(exc, name)
        if "refused the credentials" in message:
            row.add(Status.OK, f"reachable: {_status_in(message)}")
            _tls(row, config, https)
            row.add(Status.FAIL, f"auth: refused ({_status_in(message)})", _credentials_hint(raw))
        elif "TLS" in message:
            row.add(Status.FAIL, f"TLS: {message}")
        elif exc.transient:  # the last attempt's error, without the retry advice around it
            reason = message.split("last: ", 1)[-1].split(". The ", 1)[0]
            row.add(Status.FAIL, f"reachable: no ({reason})",
                    "check that the server is up and that url (host, port) is right")
        else:
            row.add(Status.FAIL, f"answer: {message}")
        return
    row.add(Status.OK, f"reachable: {page.status} in {page.millis:.0f} ms")
    _tls(row, config, https)
    row.add(Status.OK, f"auth: accepted ({config.auth.type})" if config.auth else "auth: none")
    records = _records(row, config, page.body)
    if records:
        _mapping(row, name, config, records, window, now)
    elif records is not None:
        _empty(row, name, config, window)


def _probe_connector(row: Row, name: str, raw: SourceBase, config: SourceBase,
                     window: RecentWindow, now: datetime) -> None:
    with make_connector(name, config) as connector:
        try:
            connector.probe()
        except SourceError as exc:
            message = _own(exc, name)
            hint = _credentials_hint(raw) if "credentials" in message else None
            row.add(Status.FAIL, f"reachable: no ({message})", hint)
            return
        row.add(Status.OK, "reachable: yes")
        batches = iter(connector.fetch(window.start, window.end))
        try:
            batch = next(batches, None)
        finally:
            close = getattr(batches, "close", None)  # stop a generator early: no more pages
            if close is not None:
                close()
    if batch is None:
        _empty(row, name, config, window)
        return
    row.add(Status.OK, f"first chunk: {batch.num_rows} rows")
    _time_and_rows(row, name, config, batch, window, now)


def _records(row: Row, config: RestSource, body: Any) -> list[Any] | None:
    """The first page's records, or None after adding the failure that explains why not."""
    path = config.records_path
    if path is None:
        records = find_records(body)
        found = records is not None
    else:
        records = dig(body, path)
        found = records is None or isinstance(records, list)
    if not found:
        where = ("cannot tell where the records are" if path is None
                 else f"records_path {path!r} is not a list in the answer")
        hint = f"keys that hold lists: {describe_lists(body)}"
        guess = guess_records_path(body)
        if guess is not None:
            hint += f"; set records_path: {guess!r}"
        row.add(Status.FAIL, f"first page: {where}", hint)
        return None
    at = "the top level" if path == "" else repr(path) if path else "the only list"
    row.add(Status.OK, f"first page: {len(records or [])} records at {at}")
    return records or []


def _mapping(row: Row, name: str, config: RestSource, records: list[Any],
             window: RecentWindow, now: datetime) -> None:
    first = records[0]
    if not isinstance(first, dict):
        row.add(Status.FAIL, f"fields: the records are not objects (the first is {first!r:.60})",
                "set records_path to the list of objects that hold the readings")
        return
    missing = [(role, field) for role, field in config.fields.model_dump().items()
               if field not in first]
    if missing:
        shown = ", ".join(f"fields.{role} {field!r}" for role, field in missing)
        hint = f"the first record has fields: {', '.join(map(str, first))}"
        fixes = [f"fields.{role}: {guess}" for role, _ in missing
                 if (guess := suggest_field(first, role)) is not None]
        row.add(Status.FAIL, f"fields: {shown} not in the first record",
                hint + (f"; maybe {', '.join(fixes)}" if fixes else ""))
        return
    row.add(Status.OK, "fields: " + ", ".join(config.fields.model_dump().values()) + " found")
    _time_and_rows(row, name, config, records_to_batch(records, config.fields), window, now)


def _time_and_rows(row: Row, name: str, config: SourceBase, batch: pa.Table,
                   window: RecentWindow, now: datetime) -> None:
    """The time unit by the values' magnitude, then the first page through validation."""
    field = config.fields.relative_time
    values = batch.column(field).to_pylist()
    problem = time_unit_problem(field, config.time_unit, values,
                                parse_instant(config.reference_epoch), now)
    if problem:
        first = next((v for v in values if v is not None), None)
        row.add(Status.FAIL, f"time: {field} = {first!r} with time_unit {config.time_unit}",
                problem)
        return
    from pull_pipeline.canonical import to_canonical  # pandas and pandera: only when needed
    from pull_pipeline.validation import validate

    readings = to_canonical(batch, config)
    checked = validate(readings, batch, config.fields, window.start, window.end)
    if len(checked.valid):
        tag, ts, value = checked.valid.iloc[0]
        row.add(Status.OK, f"time: {field} read as {config.time_unit}; first row: {tag} at "
                f"{_iso(ts)} = {float(value)!r}")
    if checked.rejected:
        share = checked.rejected / batch.num_rows
        status = Status.FAIL if share > config.max_reject_ratio else Status.WARN
        row.add(status, f"rows: {checked.rejected} of {batch.num_rows} would be rejected "
                f"({share:.0%}, max_reject_ratio {config.max_reject_ratio:.0%}); first: "
                f"{checked.rejects['reason'].iloc[0]}", f"see them all with "
                f"{_preview_command(name, window)}")
    else:
        row.add(Status.OK, f"rows: all {batch.num_rows} of the first page are valid")


def _empty(row: Row, name: str, config: SourceBase, window: RecentWindow) -> None:
    hint = ("if the source publishes late, set partitions.lag; or preview a window that has "
            f"data: {_preview_command(name, None)}")
    where = f"[{_iso(window.start)}, {_iso(window.end)})"
    if isinstance(config, SqlSource) and config.time_unit != "iso8601":
        unit = _unit_with_rows(config, window)
        if unit and unit != config.time_unit:
            row.add(Status.FAIL, f"first page: no rows in {where} with the window bound in "
                    f"{config.time_unit}, but rows when bound as {unit}",
                    f"{config.fields.relative_time} looks like {UNIT_NAMES.get(unit, unit)}; "
                    f"set time_unit: {unit}")
            return
    row.add(Status.WARN, f"first page: no rows in {where}, so fields and time unit are not "
            "checked", hint)


def _unit_with_rows(config: SqlSource, window: RecentWindow) -> str | None:
    """How the query finds rows for the window, when time_unit finds none (or None)."""
    try:
        return sql_sample(sql_url(config), config.query, window.start, window.end, 1).time_unit
    except SourceError:
        return None


def _tls(row: Row, config: RestSource, https: bool) -> None:
    if https and not config.tls.verify:
        row.add(Status.WARN, "TLS: certificate not verified (tls.verify: false)",
                "set tls.verify: true, with tls.ca_bundle for a private CA")
    elif https:
        row.add(Status.OK, "TLS: certificate verified"
                + (" with tls.ca_bundle" if config.tls.ca_bundle else ""))
    elif config.auth is not None and _host(config.url) not in _LOOPBACK:
        row.add(Status.WARN, "TLS: none (http), and the credentials travel in clear",
                "use the https:// address of the source")
    else:
        row.add(Status.OK, "TLS: none (http)")


def _credentials_hint(raw: SourceBase) -> str:
    """Name the `${VAR}`s behind the credentials: the value is what a person must check."""
    if isinstance(raw, RestSource):
        where, texts = "auth", _strings(raw.auth.model_dump() if raw.auth else {})
        if raw.auth is None:
            return "the source asks for credentials; add an auth block (README, kind: rest)"
    else:
        where = "the credentials in url, username and password"
        texts = _strings([getattr(raw, key, None) for key in ("url", "username", "password")])
    names = sorted({name for text in texts for name in PLACEHOLDER.findall(text)})
    if not names:
        return f"the source refused the credentials; check {where} (written in the file itself)"
    variables = " and ".join(f"${{{n}}}" for n in names)
    noun = "variable" if len(names) == 1 else "variables"
    return f"the source refused the credentials; check {where} and the {noun} {variables} it uses"


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _own(exc: BaseException, name: str) -> str:
    """An error's message without the source's name in front (the row already shows it)."""
    text = str(exc)
    for prefix in (f"{name}: ", f"sql source {name!r}: ", f"source {name!r}: "):
        text = text.removeprefix(prefix)
    return text


def _status_in(message: str) -> str:
    start = message.find("(HTTP ")
    return message[start + 1:message.find(")", start)] if start >= 0 else "refused"


def _target(config: SourceBase) -> str:
    """Where the source is, without credentials (a SQL url as `backend host:port/db`)."""
    if isinstance(config, SqlSource):
        parts = urlsplit(config.url)
        return f"{parts.scheme} {parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
    for key in ("url", "path", "function"):
        value = getattr(config, key, None)
        if isinstance(value, str):
            return value.split("?", 1)[0]
    return ""


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    return rest if rest.startswith("[") else rest.split(":", 1)[0]


def _label(window: RecentWindow) -> str:
    return window.key or f"[{_iso(window.start)}, {_iso(window.end)})"


def _preview_command(name: str, window: RecentWindow | None) -> str:
    return f"pull-pipeline preview {name} --window {window.key if window and window.key else 'KEY'}"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
