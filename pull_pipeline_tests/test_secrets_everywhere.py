"""No secret in any encoding: not in messages, logs, Dagster's storage or compute logs.

A secret leaks in the forms other code gives it: a server echoes an API key
percent-encoded or JSON-escaped, a basic-auth header is base64, a repr escapes it, and
libpq quotes a DSN it cannot parse. The secrets here contain characters that every one of
these encodings writes differently.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import dagster as dg
import httpx
import pytest
import yaml

from pull_pipeline.config.loader import parse_config
from pull_pipeline.config.models import BasicAuth
from pull_pipeline.connectors.rest.auth import build_auth
from pull_pipeline.errors import ConfigError
from pull_pipeline.redaction import MASK, redact, register_secret
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline_tests.servers import ReadingsApi

SECRET = 'p@ss w/rd:%zz+é"\\'  # @ / : % + space, non-ASCII, a quote and a backslash
PARTITION = "2024-01-01-00:00"


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")  # as os.environ holds bytes not UTF-8


def b64(text: str, urlsafe: bool = False) -> str:
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    return encode(utf8(text)).decode()


def encodings(secret: str) -> dict[str, str]:
    """Every form in which `secret` can reach a message, by name."""
    data = utf8(secret)
    forms = {
        "raw": secret,
        "quote, safe=''": quote(data, safe=""),
        "quote, default safe": quote(data),
        "quote_plus": quote_plus(data),
        "lower-case hex": quote(data, safe="").lower(),
        "json, ensure_ascii": json.dumps(secret)[1:-1],
        "json, utf-8": json.dumps(secret, ensure_ascii=False)[1:-1],
        "json, escaped slash": json.dumps(secret)[1:-1].replace("/", "\\/"),
        "json in json": json.dumps(json.dumps(secret)[1:-1])[1:-1],
        "repr": repr(secret)[1:-1],
        "ascii": ascii(secret)[1:-1],
        "bytes repr": repr(data)[2:-1],
        "base64": b64(secret),
        "base64, url-safe": b64(secret, urlsafe=True),
        "base64, unpadded": b64(secret).rstrip("="),
    }
    if data.decode("utf-8", "replace") == secret:  # httpx refuses text that is not UTF-8
        forms["httpx query"] = str(httpx.URL("http://h/", params={"k": secret})).split("=", 1)[1]
    return forms


def every_form(secrets: Iterable[str]) -> set[str]:
    """The encodings of each secret, and each of those as Dagster's JSON storage writes it."""
    forms = {form for secret in secrets for form in encodings(secret).values()}
    return forms | {json.dumps(form)[1:-1] for form in forms}


def fragments(secrets: Iterable[str], size: int = 4) -> set[str]:
    """Every `size`-character piece of every form of the secrets: no part may show."""
    return {form[i:i + size] for form in every_form(secrets)
            for i in range(len(form) - size + 1)}


# --- redact, unit --------------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "form"), sorted(encodings(SECRET).items()))
def test_redact_masks_every_encoding(encoding: str, form: str) -> None:
    register_secret(SECRET)
    assert redact(f"server said <{form}>!") == f"server said <{MASK}>!", encoding


def test_redact_masks_basic_auth_header_in_both_base64_alphabets() -> None:
    password = "b" + SECRET + "?>?>"  # ?> makes standard and URL-safe base64 differ
    build_auth(BasicAuth(type="basic", username="reader", password=password))
    pair = f"reader:{password}"
    assert b64(pair) != b64(pair, urlsafe=True)
    for form in (b64(pair), b64(pair, urlsafe=True), quote(b64(pair), safe="")):
        assert redact(f"Authorization: Basic {form}") == f"Authorization: Basic {MASK}"


def test_redact_leaves_other_text_alone() -> None:
    register_secret(SECRET)
    text = "p@ss is not w/rd: 100% of plant_a, +é \"quoted\" \\ path/to"
    assert redact(text) == text


def test_longest_secret_is_masked_whole() -> None:
    register_secret("tok-1234")
    register_secret("tok-1234-and-more")
    assert redact("a tok-1234-and-more b tok-1234") == f"a {MASK} b {MASK}"


# --- config errors at load ------------------------------------------------------------------


@pytest.mark.parametrize("auth", [
    {"type": "api_key", "value": "literal-Kx81-key"},  # neither header nor query_param
    {"type": "basic", "username": "reader", "password": 81818181},  # YAML read a number
])
def test_config_errors_do_not_echo_credentials_written_in_the_file(auth: dict[str, Any]) -> None:
    source = {"kind": "rest", "url": "http://x", "partitions": {"start": "2024-01-01"},
              "auth": auth}
    with pytest.raises(ConfigError) as error:
        parse_config({"sources": {"plant": source}}, origin="sources.yaml")
    message = str(error.value)
    assert "source 'plant'" in message and "auth" in message
    assert "Kx81" not in message and "8181" not in message


# --- the sink DSN --------------------------------------------------------------------------

WORDS = "Zq9vXk7w Jr3tYp"  # a keyword-string password with a space in it
BAD_DSNS = {
    "URL, password not percent-encoded": (f"postgresql://reader:{SECRET}@127.0.0.1:5432/db",
                                          SECRET),
    "URL, invalid percent-encoding": ("postgresql://reader:Zq9%zzvXk7w@127.0.0.1:5432/db",
                                      "Zq9%zzvXk7w"),
    "SQLAlchemy URL": (f"postgresql+psycopg://reader:{SECRET}@127.0.0.1/db", SECRET),
    "keyword, space in password": (f"host=127.0.0.1 password={WORDS} dbname=db", WORDS),
    "keyword, odd password": (f"host=127.0.0.1 password={SECRET} dbname=db", SECRET),
    "keyword, unterminated quote": (f"host=127.0.0.1 password='{WORDS} dbname=db", WORDS),
    "URL, not UTF-8": ("postgresql://reader:Zq9v\udce9Xk7w@127.0.0.1/db", "Zq9v\udce9Xk7w"),
}


@pytest.mark.parametrize("case", sorted(BAD_DSNS))
@pytest.mark.parametrize("where", ["sink.dsn", "${SINK_DSN}"])
def test_unparsable_dsn_fails_without_any_part_of_it(
    case: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn, password = BAD_DSNS[case]
    monkeypatch.setenv("PP_TEST_SINK_DSN", dsn)
    sink = TimescaleSink(dsn=dsn if where == "sink.dsn" else "${PP_TEST_SINK_DSN}")
    with pytest.raises(ConfigError) as error:
        sink.resolved_dsn()
    message = str(error.value)
    assert "sink.dsn" in message and "percent-encode" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    leaked = {piece for piece in fragments([password, *password.split()]) if piece in message}
    assert not leaked, f"{case}: {leaked} in {message!r}"


def test_parsed_dsn_registers_its_password_in_every_encoding() -> None:
    password = "q" + SECRET + "-sink"
    sink = TimescaleSink(dsn=f"postgresql://reader:{quote(password, safe='')}@127.0.0.1/db")
    sink.resolved_dsn()
    for encoding, form in encodings(password).items():
        assert redact(f"<{form}>") == f"<{MASK}>", encoding
    keyword = TimescaleSink(dsn=f"host=127.0.0.1 password='{WORDS}-kw' dbname=db")
    assert keyword.resolved_dsn().startswith("host=")
    assert redact(f"pw {WORDS}-kw") == f"pw {MASK}"


# --- a failing REST source run by Dagster ----------------------------------------------------

API_KEY = "k" + SECRET
PASSWORD = "b" + SECRET + "?>?>"
BASIC_PAIR = f"reader:{PASSWORD}"
# What each failing source's server echoes in its 400 body: one form per source, so every
# form lands within the body excerpt that the error message quotes.
ECHOES: dict[str, tuple[str, str]] = {
    "echo_query": ("api_key", quote_plus(API_KEY)),
    "echo_quoted": ("api_key", quote(API_KEY, safe="")),
    "echo_path": ("api_key", quote(API_KEY)),
    "echo_json": ("api_key", json.dumps(API_KEY)[1:-1]),
    "echo_utf8": ("api_key", json.dumps(API_KEY, ensure_ascii=False)[1:-1]),
    "echo_json_twice": ("api_key", json.dumps(json.dumps(API_KEY)[1:-1])[1:-1]),
    "echo_basic": ("basic", b64(BASIC_PAIR)),
    "echo_basic_url": ("basic", b64(BASIC_PAIR, urlsafe=True)),
}


def _echo_project(tmp_path: Path, factory: Callable[..., ReadingsApi], pg_dsn: str,
                  table: str) -> Path:
    """sources.yaml with one REST source per echo, each server answering 400 with it."""
    sources: dict[str, Any] = {}
    for name, (auth, echo) in ECHOES.items():
        api = factory()
        api.fail_always(400, body='{"detail": "rejected ' + echo + '"}')
        sources[name] = api.source_config(auth={
            "type": "api_key", "query_param": "api_key", "value": "${ECHO_API_KEY}"
        } if auth == "api_key" else {
            "type": "basic", "username": "reader", "password": "${ECHO_PASSWORD}"})
    config = {"sink": {"dsn": pg_dsn, "table": table},
              "landing": {"path": str(tmp_path / "landing")}, "sources": sources}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_echoed_secrets_reach_no_log_event_or_file(
    readings_api_factory: Callable[..., ReadingsApi], tmp_path: Path, pg_dsn: str,
    table_name: str,
) -> None:
    config = _echo_project(tmp_path, readings_api_factory, pg_dsn, table_name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PULL_PIPELINE_CONFIG": str(config),
           "PULL_PIPELINE_HOME": str(tmp_path / "state"), "ECHO_API_KEY": API_KEY,
           "ECHO_PASSWORD": PASSWORD, "PYTHONUTF8": "1"}
    env.pop("SINK_DSN", None)
    selection = ",".join(f"{name}/raw" for name in ECHOES)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize",
         "-m", "pull_pipeline.definitions", "--select", selection, "--partition", PARTITION],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0, done.stdout + done.stderr

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        logs = instance.all_logs(run.run_id)
    failures = [entry.dagster_event.step_failure_data for entry in logs
                if entry.dagster_event and entry.dagster_event.is_step_failure]
    descriptions = {failure.user_failure_data.description for failure in failures
                    if failure.user_failure_data}
    assert len(descriptions) == len(ECHOES)
    for description in descriptions:  # each echo reached its message, masked
        assert description is not None
        assert "rejected the request (HTTP 400" in description and f"rejected {MASK}" in description

    compute_logs = [p for p in home.rglob("*") if p.is_file() and "compute_logs" in p.parts]
    assert any(p.stat().st_size for p in compute_logs), "no compute log was captured"
    places = {
        "stdout": done.stdout,
        "stderr": done.stderr,
        "event log": "\n".join(repr(entry) for entry in logs),
        "failures": "\n".join(f"{failure.error!r} {failure.user_failure_data!r}"
                              for failure in failures),
        **{str(p.relative_to(home)): p.read_bytes().decode("utf-8", "replace")
           for p in home.rglob("*") if p.is_file()},
    }
    forms = every_form([API_KEY, PASSWORD, BASIC_PAIR, b64(BASIC_PAIR),
                        b64(BASIC_PAIR, urlsafe=True)])
    leaks = {(place, form) for place, text in places.items() for form in forms if form in text}
    assert not leaks


# --- what the code location shows ----------------------------------------------------------


def test_the_code_location_snapshot_shows_no_credential_written_in_the_file(
    tmp_path: Path,
) -> None:
    """Resources show their settings as descriptions (defs/resources.py): a password or key
    written literally in sources.yaml is masked there, in every form, and placeholders stay."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._serdes import serialize_value

    from pull_pipeline.definitions import build_definitions
    from pull_pipeline_tests.helpers import make_project

    password, key = "Lq7" + SECRET, "Wd2/kS+9zK" + SECRET
    s3 = {"endpoint_url": "http://127.0.0.1:9", "aws_access_key_id": "${PP_TEST_KEY_ID}",
          "aws_secret_access_key": key}
    project = make_project(tmp_path, {
        "sink": {"dsn": f"postgresql://writer:{quote(password, safe='')}@127.0.0.1:5432/db"},
        "landing": {"path": "s3://bucket/landing", "s3": s3},
        "archive": {"path": "s3://bucket/archive", "s3": s3},
        "sources": {"plant": {"kind": "files", "path": str(tmp_path),
                              "partitions": {"start": "2024-01-01"}}}})
    repository = build_definitions(project).get_repository_def()
    shown = serialize_value(RepositorySnap.from_def(repository))
    descriptions = [resource.description or "" for resource
                    in repository.get_top_level_resources().values()]
    assert any("${PP_TEST_KEY_ID}" in text for text in descriptions)  # the settings are shown
    assert any(f'"dsn": "{MASK}"' in text for text in descriptions)
    assert any(f'"aws_secret_access_key": "{MASK}"' in text for text in descriptions)
    leaked = {piece for piece in fragments([password, key], size=6) if piece in shown}
    assert not leaked, leaked
