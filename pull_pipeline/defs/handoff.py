"""A ranged run's `raw` step loads each window as it lands; its `readings` step reports it.

Dagster runs `raw` to the end before `readings` starts, so a backfill would land its whole
range before loading any of it. When one process runs both steps of the run (the in-process
executor), `raw` uses `pipeline.pull` instead: window i loads while window i+1 is fetched,
and the first windows are queryable while later ones are still being fetched. `readings`
then takes the load's statistics (and error) from here and reports them as it always does,
so each window is still materialized once per asset and the checks run as before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import dagster as dg

from pull_pipeline.defs.naming import MAINTENANCE_TAG, SourceNames
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.pipeline import LoadStats


@dataclass(frozen=True)
class DoneLoad:
    stats: LoadStats
    error: PullPipelineError | None


_done: dict[tuple[str, str], DoneLoad] = {}
_lock = threading.Lock()


def raw_loads_too(context: dg.AssetExecutionContext, names: SourceNames, windows: int) -> bool:
    """Whether this `raw` step should load as it lands: a range, `readings` in the same run,
    and not a replay. Not under the Celery executor, whose `readings` step runs in another
    process (it would find no handoff and load again: exact, but twice the work)."""
    run, readings = context.run, names.readings
    steps = run.step_keys_to_execute  # a re-execution of some steps only
    return (windows > 1 and context.job_def.executor_def.name != "celery"
            and readings in context.job_def.asset_layer.executable_asset_keys
            and (not run.asset_selection or readings in run.asset_selection)
            and (steps is None or readings.to_python_identifier() in steps)
            and run.tags.get(MAINTENANCE_TAG) != "replay")


def hand_over(run_id: str, source: str, done: DoneLoad) -> None:
    with _lock:
        _done[(run_id, source)] = done


def take(run_id: str, source: str) -> DoneLoad | None:
    """The load `raw` did in this run, if it did one (once: it is removed)."""
    with _lock:
        return _done.pop((run_id, source), None)
