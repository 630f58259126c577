"""Which config file a command reads, and reading it with the project's loader."""

from __future__ import annotations

import os
from pathlib import Path

from pull_pipeline.config.loader import CONFIG_ENV, DEFAULT_CONFIG, Project, load_project


def config_file(given: str | None) -> Path:
    """`--config`, else `$PULL_PIPELINE_CONFIG`, else ./sources.yaml (made absolute)."""
    return Path(given or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG).expanduser().resolve()


def load(given: str | None) -> Project:
    """The validated project; a `ConfigError` names the file, the source and the key."""
    return load_project(config_file(given))
