"""`pull-pipeline`: check, preview and add sources from the shell, without Dagster.

Each command lives in its own module (`check`, `preview`, `init_source`) with
`run(args) -> exit status`, imported only when chosen. Dagster is not imported: the
connectors, mapping and validation do not need it, and it would add a second to every
command (only `preview` loads it, to read partition keys exactly as Dagster does).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from importlib import import_module

from pull_pipeline.cli.output import emit, wrap
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.redaction import redact


def build_parser() -> argparse.ArgumentParser:
    """Every command's arguments; the command's module is imported only when it runs."""
    parser = argparse.ArgumentParser(
        prog="pull-pipeline", description="Set up and try pull_pipeline sources from the shell.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help="config file (default: $PULL_PIPELINE_CONFIG, else ./sources.yaml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, module: str, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=summary, description=summary)
        sub.set_defaults(module=f"pull_pipeline.cli.{module}")
        return sub

    check = command("check", "check", "validate the config, then probe every source (or the "
                    "SOURCEs named) and the sink live; exit status 1 on any failure")
    check.add_argument("sources", nargs="*", metavar="SOURCE")

    preview = command("preview", "preview", "pull one window and show mapped rows, rejects "
                      "and totals; writes nothing (exit status 1 if a run would fail it)")
    preview.add_argument("source", metavar="SOURCE")
    preview.add_argument("--window", required=True, metavar="KEY",
                         help="partition key: 2024-01-01-00:00 (hourly and shorter) or "
                         "2024-01-01 (daily and longer)")
    preview.add_argument("--rows", type=int, default=10, metavar="N",
                         help="mapped rows and rejects to show (default 10)")
    preview.add_argument("--progress", action="store_true",
                         help="a line per page or chunk on stderr (default: when a terminal)")

    init = command("init-source", "init_source", "add a REST or SQL source: sample it once, "
                   "guess records path, fields and time unit, append the block to the config")
    init.add_argument("--name", help="source name (letters, digits, underscores)")
    init.add_argument("--kind", choices=("rest", "sql"))
    init.add_argument("--url", help="REST endpoint, or SQLAlchemy database URL")
    init.add_argument("--auth", choices=("none", "api_key", "bearer", "basic"),
                      help="REST authentication")
    init.add_argument("--auth-header", metavar="HEADER", help="api_key: the header carrying it")
    init.add_argument("--auth-param", metavar="PARAM", help="api_key: the query parameter instead")
    init.add_argument("--username", help="basic auth user name")
    init.add_argument("--secret-env", metavar="VAR",
                      help="environment variable holding the key, token or password")
    init.add_argument("--query", help="SQL: a SELECT binding :start and :end")
    init.add_argument("--cadence", help="partitions.cadence (default hourly)")
    init.add_argument("--start", help="partitions.start (default: today, UTC)")
    init.add_argument("--sample-window", default="1 day", metavar="DURATION",
                      help="how far back the sample reaches (default 1 day)")
    init.add_argument("--yes", action="store_true",
                      help="accept the guesses and write without asking")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status is 0 when all went well, 1 on a failure."""
    args = build_parser().parse_args(argv)
    _log_warnings_to_stderr()
    try:
        return int(import_module(args.module).run(args))
    except PullPipelineError as exc:
        for line in wrap(f"error: {exc}", 7):
            emit(line, sys.stderr)
        return 1
    except BrokenPipeError:  # `| head`: the reader left; stay quiet about it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        emit("interrupted", sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: show it, but never a secret in it
        emit("".join(traceback.format_exception(exc)), sys.stderr)
        return 1


class _Redacted(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _log_warnings_to_stderr() -> None:
    """The library's own warnings (embedded sink, driver notes) reach the user, redacted."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, _Redacted) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Redacted("%(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
