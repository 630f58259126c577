"""`pull-pipeline check [SOURCE...]`: validate the config, then probe each source and the
sink live, one row each, ok / warn / FAIL with the fix. Exit status 1 on any FAIL.

Probes run in parallel (each waits on the network), and the rows print in config order.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from pull_pipeline.cli.output import Row, Status, emit, render_rows
from pull_pipeline.cli.probes import probe_source
from pull_pipeline.cli.project import load
from pull_pipeline.cli.sink_probe import probe_sink
from pull_pipeline.errors import ConfigError

_PARALLEL = 8


def run(args: argparse.Namespace) -> int:
    try:
        project = load(args.config)
    except ConfigError as exc:
        config = Row("config", "invalid")
        config.add(Status.FAIL, str(exc))
        return _report([config])
    sources = project.config.sources
    chosen = args.sources or list(sources)
    rows = [Row("config", f"{project.path}: {len(sources)} source(s), sink table "
                f"{project.config.sink.table}")]
    unknown = [name for name in chosen if name not in sources]
    for name in unknown:
        row = Row(name, "not in the config")
        row.add(Status.FAIL, f"no source named {name!r}",
                f"sources in {project.path.name}: {', '.join(sources) or 'none'}")
        rows.append(row)
    now = datetime.now(UTC)
    with ThreadPoolExecutor(_PARALLEL) as pool:
        probes = [pool.submit(probe_source, name, sources[name], now)
                  for name in chosen if name in sources]
        sink = pool.submit(probe_sink, project)
        rows += [probe.result() for probe in probes] + [sink.result()]
    return _report(rows)


def _report(rows: list[Row]) -> int:
    for line in render_rows(rows):
        emit(line)
    counts = {status: sum(row.status is status for row in rows) for status in Status}
    emit(f"\n{counts[Status.FAIL]} failed, {counts[Status.WARN]} with warnings, "
         f"{counts[Status.OK]} ok")
    return 1 if counts[Status.FAIL] else 0
