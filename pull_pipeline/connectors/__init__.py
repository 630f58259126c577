"""Connectors by source kind: each kind is a config class registered in `SOURCE_KINDS`.

A kind's class says what fetches its windows (`SourceBase.connector`); the built-in kinds
import their connector module only when a source of that kind runs. A new kind is one
`SourceKind` subclass registered with `@SOURCE_KINDS.register` (see `connectors.base`).
"""

from __future__ import annotations

from pathlib import Path

from pull_pipeline.config.models import SOURCE_KINDS, SourceBase
from pull_pipeline.connectors.base import Connector, SourceKind
from pull_pipeline.errors import ConfigError


def make_connector(name: str, config: SourceBase, file: str | Path | None = None) -> Connector:
    """Build the connector for a source whose `${NAME}` placeholders are already resolved.

    A `ConfigError` found while building it (a SQL URL or driver, TLS files) names the
    source and the key; with `file` (the config file's path) it names the file first.
    """
    if file is None:
        return config.connector(name)
    try:
        return config.connector(name)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None


__all__ = ["SOURCE_KINDS", "Connector", "SourceKind", "make_connector"]
