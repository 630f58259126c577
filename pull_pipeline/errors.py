"""Errors that reach people: every message is redacted when the error is made."""

from __future__ import annotations

from pull_pipeline.redaction import redact


def first_line(error: object) -> str:
    """The first non-empty line of an error's text, or its type's name when it has none.

    Driver and parser messages run to many lines (context, hints, the query); a message
    that names the source and the fix quotes only this line.
    """
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


class PullPipelineError(Exception):
    """Base class: the message names the source and the fix, and never holds a secret."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class ConfigError(PullPipelineError):
    """sources.yaml is invalid, or a `${NAME}` it needs is not set."""


class SourceError(PullPipelineError):
    """A source failed. `transient` errors are worth retrying and trigger recovery later."""

    transient: bool = False


class TransientSourceError(SourceError):
    """The source is down, overloaded or unreachable (connection error, 429, 5xx)."""

    transient = True


class PermanentSourceError(SourceError):
    """Retrying will not help: credentials refused, not found, malformed response."""


class SinkError(PullPipelineError):
    """The sink refused the load; the window keeps its previous rows."""

    transient: bool = False


class SinkUnavailable(SinkError):
    """The sink cannot be reached or dropped the connection: recovery retries later."""

    transient = True
