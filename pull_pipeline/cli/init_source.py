"""`pull-pipeline init-source`: add a REST or SQL source from one sample of its answer.

Asks (or takes from flags, or reads from stdin) what cannot be guessed - name, URL, auth,
query - samples the source once, guesses the records path, the three fields and the time
unit, and appends the block to the config. Secrets are written as `${VAR}` references only:
the value is read from the environment (or asked once, hidden) for the sample and never
written. See `appending` for how the file is kept intact.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import ValidationError
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from pull_pipeline.cli.appending import add_source, render_block
from pull_pipeline.cli.guess import (
    UNIT_NAMES,
    guess_fields,
    guess_records_path,
    infer_time_unit,
    records_at,
)
from pull_pipeline.cli.output import emit
from pull_pipeline.cli.project import config_file
from pull_pipeline.cli.sampling import rest_first_page, sql_sample
from pull_pipeline.cli.windows import CADENCES, last_complete_window
from pull_pipeline.config.env import PLACEHOLDER, resolve_text
from pull_pipeline.config.loader import load_project
from pull_pipeline.config.models import (
    MAX_SOURCE_NAME,
    SOURCE_NAME,
    PartitionsConfig,
    RestSource,
)
from pull_pipeline.durations import parse_duration
from pull_pipeline.errors import ConfigError
from pull_pipeline.redaction import is_sensitive_key, register_secret

TIME_UNITS = ("s", "ms", "us", "ns", "iso8601")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Prompter:
    """Questions on stderr, answers from stdin (a terminal, or lines piped in).

    A flag's value answers its question without asking; `--yes` takes every default and
    guess without asking. When stdin ends, a question with a default takes it and one
    without fails.
    """

    def __init__(self, assume_yes: bool) -> None:
        self.assume_yes = assume_yes
        self.terminal = sys.stdin.isatty()
        self.secrets: list[str] = []  # every secret value seen, to prove none is written

    def ask(self, question: str, default: str | None = None, given: str | None = None,
            choices: tuple[str, ...] = ()) -> str:
        if given is not None:
            return self._checked(question, given, choices)
        if self.assume_yes and default is not None:
            return default
        while True:
            shown = f" ({', '.join(choices)})" if choices else ""
            sys.stderr.write(f"{question}{shown}{f' [{default}]' if default else ''}: ")
            sys.stderr.flush()
            line = sys.stdin.readline()
            if not self.terminal:
                sys.stderr.write("\n")
            answer = line.strip() or default
            if not line and answer is None:
                raise ConfigError(f"no answer to {question!r} (stdin ended); pass it as a flag")
            if answer is not None:
                try:
                    return self._checked(question, answer, choices)
                except ConfigError as exc:
                    if not self.terminal:
                        raise
                    emit(str(exc), sys.stderr)

    def secret(self, variable: str) -> str:
        prompt = f"value of {variable} (used once for the sample, never written): "
        if self.terminal:
            return getpass.getpass(prompt, stream=sys.stderr)
        sys.stderr.write(prompt + "\n")
        value = sys.stdin.readline().rstrip("\n")
        if not value:
            raise ConfigError(f"{variable} is not set and stdin gave no value; export it first")
        return value

    def confirm(self, question: str) -> bool:
        if self.assume_yes:
            return True
        return self.ask(question, "y").lower() in ("y", "yes")

    @staticmethod
    def _checked(question: str, answer: str, choices: tuple[str, ...]) -> str:
        if choices and answer not in choices:
            raise ConfigError(f"{question}: {answer!r} is not one of {', '.join(choices)}")
        return answer


def run(args: argparse.Namespace) -> int:
    ask = Prompter(args.yes)
    path = config_file(args.config)
    existing = load_project(path).config.sources if path.exists() else {}
    name = ask.ask("source name (letters, digits, underscores)", given=args.name)
    if not SOURCE_NAME.fullmatch(name) or len(name) > MAX_SOURCE_NAME:
        raise ConfigError(f"source name {name!r} must be letters, digits and underscores, "
                          f"at most {MAX_SOURCE_NAME} characters")
    if name in existing:
        raise ConfigError(f"{path} already has a source named {name!r}; choose another name")
    kind = ask.ask("kind", "rest", args.kind, choices=("rest", "sql"))
    now = datetime.now(UTC)
    try:
        sample_start = now - parse_duration(args.sample_window)
    except ValueError as exc:
        raise ConfigError(f"--sample-window: {exc}") from None
    build = _rest if kind == "rest" else _sql
    block, variables = build(ask, args, name, sample_start, now)
    cadence = ask.ask("partitions.cadence", "hourly", args.cadence)
    if cadence not in CADENCES and len(cadence.split()) != 5:
        raise ConfigError(f"partitions.cadence {cadence!r} is not one of {', '.join(CADENCES)} "
                          "nor a 5-field cron string such as '0 */6 * * *'")
    last = last_complete_window(PartitionsConfig(cadence=cadence, start="1970-01-01"), now)
    start = ask.ask("partitions.start (the first window)", last.start.date().isoformat(),
                    args.start)
    try:
        datetime.fromisoformat(start.replace("Z", "+00:00"))  # noqa: FURB162 - as the loader
    except ValueError:
        raise ConfigError(f"partitions.start {start!r} is not a date or an ISO-8601 instant "
                          "such as 2024-01-01 or 2024-01-01T00:00:00Z") from None
    block["partitions"] = {"cadence": cadence, "start": start}
    text = render_block(name, block)
    if any(secret in text or quote(secret, safe="") in text for secret in ask.secrets):
        raise ConfigError(f"{name}: the block would hold a secret value; nothing was written "
                          "(write the credential as a ${VAR} reference)")
    emit(f"\nthe block for {path}:\n\n{text}")
    if not ask.confirm(f"append it to {path.name}?"):
        emit("nothing written")
        return 1
    add_source(path, name, block)
    _next_steps(name, path, block, variables, now)
    return 0


def _rest(ask: Prompter, args: argparse.Namespace, name: str, start: datetime,
          now: datetime) -> tuple[dict[str, Any], list[str]]:
    url, query_key = _key_in_query(ask.ask("URL of the readings endpoint", given=args.url))
    kind = ask.ask("authentication", "api_key" if query_key else "none", args.auth,
                   choices=("none", "api_key", "bearer", "basic"))
    auth: dict[str, Any] | None = None
    secret = None
    if kind != "none":
        noun = {"api_key": "API_KEY", "bearer": "TOKEN", "basic": "PASSWORD"}[kind]
        variable = ask.ask("environment variable holding the secret",
                           f"{name.upper()}_{noun}", args.secret_env)
        secret = _secret(ask, variable, query_key[1] if query_key else None)
        auth = {"type": kind}
        if kind == "api_key":
            param = args.auth_param or (query_key[0] if query_key else None)
            header = None if param else ask.ask("header carrying the key ('?name' for a query "
                                                "parameter)", "X-API-Key", args.auth_header)
            if header and header.startswith("?"):
                param, header = header[1:], None
            auth |= {"query_param": param} if param else {"header": header}
            auth["value"] = f"${{{variable}}}"
        elif kind == "bearer":
            auth["token"] = f"${{{variable}}}"
        else:
            auth |= {"username": ask.ask("user name", given=args.username),
                     "password": f"${{{variable}}}"}
    block: dict[str, Any] = {"kind": "rest", "url": url}
    if auth:
        block["auth"] = auth
    sampled = {**block, "partitions": {"cadence": "hourly", "start": "1970-01-01"}}
    if auth and secret is not None:
        sampled["auth"] = {k: secret if PLACEHOLDER.fullmatch(str(v)) else v
                           for k, v in auth.items()}
    try:
        config = RestSource.model_validate(sampled)
    except ValidationError as exc:
        raise ConfigError(f"{name}: {exc.errors()[0]['msg']}") from None
    body = rest_first_page(name, config, start, now).body
    path = guess_records_path(body)
    if path is None:
        raise ConfigError(f"{name}: no list of records in the answer for [{start:%Y-%m-%d %H:%M}, "
                          f"{now:%Y-%m-%d %H:%M}) UTC; check the URL, or sample further back "
                          "with --sample-window")
    records = [r for r in records_at(body, path) if isinstance(r, dict)]
    if not records:
        raise ConfigError(f"{name}: the list at {path or 'the top level'!r} is empty for the "
                          "sample window; sample a window with data (--sample-window 7 days)")
    emit(f"first record at {path or 'the top level'!r}: {str(records[0])[:300]}")
    _warn_if_paged(body, path)
    block["records_path"] = ask.ask("records_path", path)
    block |= _mapping(ask, records, None, now)
    return block, [variable] if auth else []


def _sql(ask: Prompter, args: argparse.Namespace, name: str, start: datetime,
         now: datetime) -> tuple[dict[str, Any], list[str]]:
    url = ask.ask("database URL (SQLAlchemy, e.g. postgresql://user@host:5432/db)",
                  given=args.url)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"{url!r} is not a database URL such as "
                          "postgresql://user@host:5432/db or sqlite:///path/to/file.db") from None
    literal = parsed.password if parsed.password and "${" not in str(parsed.password) else None
    block: dict[str, Any] = {"kind": "sql", "url": url}
    variables = sorted(set(PLACEHOLDER.findall(url)))
    password = None
    variable: str | None = None
    if literal or args.secret_env:
        variable = ask.ask("environment variable holding the password",
                           f"{name.upper()}_DB_PASSWORD", args.secret_env)
    elif parsed.get_backend_name() != "sqlite" and not variables:
        answer = ask.ask("environment variable holding the password ('-' for none)", "-")
        variable = None if answer == "-" else answer
    if variable:
        password = _secret(ask, variable, literal)
        block["url"] = parsed._replace(password=None).render_as_string(hide_password=False)
        block["password"] = f"${{{variable}}}"
        variables.append(variable)
    query = ask.ask("query (a SELECT binding :start and :end)", given=args.query)
    block["query"] = query
    resolved = resolve_text(url, where=f"source {name!r}", key="url")
    if password is not None:
        resolved = make_url(resolved).set(password=password).render_as_string(hide_password=False)
    sample = sql_sample(resolved, query, start, now)
    emit(f"first row: {str(sample.rows[0])[:300]}")
    block |= _mapping(ask, sample.rows, sample.time_unit, now)
    return block, variables


def _mapping(ask: Prompter, records: list[dict[str, Any]], bound_unit: str | None,
             now: datetime) -> dict[str, Any]:
    """fields and time_unit, guessed from the records and confirmed."""
    guess = guess_fields(records, _EPOCH, now)
    keys = tuple(dict.fromkeys(k for r in records for k in r))
    fields = {role: ask.ask(f"fields.{role}", getattr(guess, role), choices=keys)
              for role in ("sensor_tag", "relative_time", "sensor_value")}
    seen = infer_time_unit([r.get(fields["relative_time"]) for r in records], _EPOCH, now)
    if bound_unit and seen and seen != bound_unit and bound_unit != "iso8601":
        emit(f"note: the query matched rows with the window bound in {bound_unit}, but "
             f"{fields['relative_time']} looks like {UNIT_NAMES.get(seen, seen)}", sys.stderr)
    unit = ask.ask("time_unit", bound_unit or seen, choices=TIME_UNITS)
    return {"fields": fields, "time_unit": unit}


def _secret(ask: Prompter, variable: str, known: str | None) -> str:
    """The secret's value for the sample: the environment's, one already given, or asked."""
    if not PLACEHOLDER.fullmatch(f"${{{variable}}}"):
        raise ConfigError(f"{variable!r} is not an environment variable name")
    value = os.environ.get(variable) or known or ask.secret(variable)
    for secret in (value, known):
        if secret:
            register_secret(secret)
            ask.secrets.append(secret)
    return value


def _key_in_query(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without a credential in its query string, and that (name, value) if any."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    keys = [(k, v) for k, v in pairs if is_sensitive_key(k) or k.lower() in ("key", "apikey")]
    if not keys:
        return url, None
    register_secret(keys[0][1])
    rest = urlencode([(k, v) for k, v in pairs if (k, v) != keys[0]])
    return urlunsplit(parts._replace(query=rest)), keys[0]


def _warn_if_paged(body: Any, records_path: str) -> None:
    if not isinstance(body, dict):
        return
    hints = [k for k in body if k != records_path and any(
        word in k.lower() for word in ("next", "cursor", "page", "offset", "links"))]
    if hints:
        emit(f"note: the answer has {', '.join(hints)}: it may come in pages; add a pagination "
             "block (README, kind: rest) or only the first page of each window is read",
             sys.stderr)


def _next_steps(name: str, path: Path, block: dict[str, Any], variables: list[str],
                now: datetime) -> None:
    window = last_complete_window(PartitionsConfig.model_validate(block["partitions"]), now)
    emit(f"\nadded source {name!r} to {path}\n\nnext:")
    for variable in variables:
        if variable not in os.environ:
            emit(f"  export {variable}=...          # where the pipeline runs")
    emit(f"  pull-pipeline check {name}")
    emit(f"  pull-pipeline preview {name} --window {window.key or 'KEY'}")
    emit(f"  then materialize {name}/raw and {name}/readings in the Dagster UI (Assets)")
