"""The code location with one job that runs on the executor PULL_PIPELINE_EXECUTOR selects.

Run workers and Celery workers import this module by name (the job's reconstruction pointer),
each reading its own copy of sources.yaml through $PULL_PIPELINE_CONFIG.
"""

import dagster as dg

from pull_pipeline.config.loader import load_project
from pull_pipeline.definitions import build_definitions
from pull_pipeline.defs.executor import build_executor

JOB = "pull_windows"


@dg.definitions
def defs() -> dg.Definitions:
    """Every source's definitions, plus `pull_windows`: raw, readings and their
    checks, one window a run."""
    project = load_project()
    selection = dg.AssetSelection.assets(*(
        dg.AssetKey([name, part]) for name in project.config.sources for part in ("raw", "readings")))
    job = dg.define_asset_job(JOB, selection, executor_def=build_executor())
    return dg.Definitions.merge(build_definitions(project), dg.Definitions(jobs=[job]))
