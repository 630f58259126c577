"""Connectors by source kind. Each module holds one kind; this registry picks it."""

from __future__ import annotations

from importlib import import_module

from pull_pipeline.config.models import SourceBase
from pull_pipeline.connectors.base import Connector

# kind -> "module:class"; imported lazily so a kind's dependencies load only when used.
REGISTRY = {
    "rest": "pull_pipeline.connectors.rest:RestConnector",
    "sql": "pull_pipeline.connectors.sql:SqlConnector",
    "files": "pull_pipeline.connectors.files:FilesConnector",
    "python": "pull_pipeline.connectors.python:PythonConnector",
}


def make_connector(name: str, source: SourceBase) -> Connector:
    """Build the connector for a source whose `${NAME}` placeholders are already resolved."""
    module, cls = REGISTRY[source.kind].split(":")  # type: ignore[attr-defined]
    return getattr(import_module(module), cls)(name, source)


__all__ = ["REGISTRY", "Connector", "make_connector"]
