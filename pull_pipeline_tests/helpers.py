"""Build a project from a config dict and run its assets the way Dagster runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from pull_pipeline.config.loader import Project, parse_config
from pull_pipeline.definitions import build_definitions


def make_project(tmp_path: Path, config: dict[str, Any]) -> Project:
    """A Project whose relative paths (landing, state) live under `tmp_path`."""
    config.setdefault("landing", {"path": str(tmp_path / "landing")})
    return Project(config=parse_config(config, origin="test-sources.yaml"),
                   path=tmp_path / "sources.yaml")


def run_source(
    project: Project,
    source: str,
    partition_key: str | None = None,
    *,
    instance: dg.DagsterInstance | None = None,
    tags: dict[str, str] | None = None,
    assets: tuple[str, ...] = ("raw", "readings"),
) -> dg.ExecuteInProcessResult:
    """Materialize `<source>/raw` and `<source>/readings` for one partition (or a range via tags)."""
    defs = build_definitions(project)
    selection = [dg.AssetKey([source, name]) for name in assets]
    return dg.materialize(
        [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],  # type: ignore[union-attr]
        selection=selection,
        resources=defs.resources,
        partition_key=partition_key,
        instance=instance,
        tags=tags,
        raise_on_error=False,
    )


def materialization_metadata(result: dg.ExecuteInProcessResult, source: str) -> dict[str, Any]:
    """The metadata of the last `<source>/readings` materialization in a result, as plain values."""
    events = [e for e in result.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey([source, "readings"])]
    metadata = events[-1].materialization.metadata
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's message in a result, joined."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            assert error is not None, event  # a failed step carries what it raised
            messages.append(str(error.message))
    return "\n".join(messages)
