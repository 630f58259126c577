"""A run worker builds only the sources its run needs, not the whole fleet.

Every run worker loads the code location again to execute its run: with every source built
that is seconds of CPU at hundreds of sources, paid by every run (README, Performance). A
run needs only its own source: its job is that source's (`pull_<source>`, `replay_`,
`restore_`), or its asset selection names the sources (the UI's Materialize button,
backfills, archive exports). So a run worker builds those sources and the location-wide definitions.

Dagster does not tell a definitions function which run it is loading for. What it hands the
worker says so, in one of two places, both read here and both exercised by
`test_run_scope.py` against a real code server and a real `dagster api execute_run`:

- the default run launcher: the code server starts the worker as a `multiprocessing` spawn
  child whose target is Dagster's `start_run_in_subprocess`, the serialized run args first;
- `dagster api execute_run | resume_run | execute_step` (the Kubernetes and Docker run
  launchers, step executors): the serialized args, on the command line or in the environment.

Anywhere else (the code server, the webserver, the daemon, Celery workers, tests), or when
anything here is not as expected, every source is built: as before, only slower.
"""

from __future__ import annotations

import base64
import logging
import multiprocessing
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import replace

import dagster as dg
from dagster._core.definitions.definitions_load_context import (
    DefinitionsLoadContext,
    DefinitionsLoadType,
)
from dagster._grpc.impl import start_run_in_subprocess
from dagster._grpc.types import (
    ExecuteExternalJobArgs,
    ExecuteRunArgs,
    ExecuteStepArgs,
    ResumeRunArgs,
)
from dagster._serdes import deserialize_value

from pull_pipeline.config.loader import Project
from pull_pipeline.defs.naming import SourceNames, source_of

log = logging.getLogger(__name__)

WorkerArgs = ExecuteExternalJobArgs | ExecuteRunArgs | ExecuteStepArgs | ResumeRunArgs

# `dagster api <command>`: its args' type, and the environment variables Dagster's CLI reads
# them from when they are not on the command line (plain, compressed).
API_COMMANDS: dict[str, tuple[type[WorkerArgs], str | None, str | None]] = {
    "execute_run": (ExecuteRunArgs, "DAGSTER_EXECUTE_RUN_ARGS", "DAGSTER_COMPRESSED_EXECUTE_RUN_ARGS"),
    "resume_run": (ResumeRunArgs, None, None),
    "execute_step": (ExecuteStepArgs, "DAGSTER_EXECUTE_STEP_ARGS",
                     "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS"),
}
COMPRESSED_OPTION = "--compressed-input-json"

_SCOPES: dict[str, set[str] | None] = {}  # run id -> its sources (None: all), once per process


def scoped_to_this_run(project: Project, argv: Sequence[str], environ: Mapping[str, str]) -> Project:
    """`project` with only the sources of the run this process executes, in a run worker;
    `project` itself anywhere else, or when the run cannot be told."""
    if not reconstructing():
        return project
    try:
        args = worker_args(argv, environ)
        if args is None:
            return project
        if args.run_id not in _SCOPES:  # Dagster may load the location twice for one run
            _SCOPES[args.run_id] = sources_of_run(args, project)
    except Exception as exc:  # noqa: BLE001 - an unreadable run costs time, never the run
        log.warning("building every source: this run worker's run could not be read (%s)",
                    type(exc).__name__)
        return project
    sources = _SCOPES[args.run_id]
    return project if sources is None else only(project, sources)


def run_of_this_worker(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The id of the run this process executes, in a run worker whose run can be read."""
    try:
        args = worker_args(argv, environ) if reconstructing() else None
    except Exception:  # noqa: BLE001 - scoped_to_this_run says why, once
        return None
    return args.run_id if args else None


def worker_args(argv: Sequence[str], environ: Mapping[str, str]) -> WorkerArgs | None:
    """What Dagster handed this run worker (see the module's docstring), if it is one."""
    return api_command_args(argv, environ) or spawned_run_args()


def reconstructing() -> bool:
    """Whether Dagster is loading the location to execute something, not to serve it."""
    return (DefinitionsLoadContext.is_set()
            and DefinitionsLoadContext.get().load_type == DefinitionsLoadType.RECONSTRUCTION)


def api_command_args(argv: Sequence[str], environ: Mapping[str, str]) -> WorkerArgs | None:
    """The args of `dagster api execute_run|resume_run|execute_step`, when this is one."""
    command = next((argv[i + 1] for i in range(len(argv) - 1)
                    if argv[i] == "api" and argv[i + 1] in API_COMMANDS), None)
    if command is None:
        return None
    kind, plain_env, compressed_env = API_COMMANDS[command]
    rest = list(argv[argv.index(command) + 1:])
    compressed = (rest[rest.index(COMPRESSED_OPTION) + 1]
                  if COMPRESSED_OPTION in rest[:-1] else None)
    plain = next((arg for arg in rest if arg.startswith("{")), None)
    plain = plain or (environ.get(plain_env) if plain_env else None)
    compressed = compressed or (environ.get(compressed_env) if compressed_env else None)
    if not plain and compressed:
        plain = zlib.decompress(base64.b64decode(compressed.encode())).decode()
    return deserialize_value(plain, kind) if plain else None


def spawned_run_args() -> ExecuteExternalJobArgs | None:
    """The run args of a run worker the code server spawned (default run launcher)."""
    process = multiprocessing.current_process()
    if getattr(process, "_target", None) is not start_run_in_subprocess:
        return None
    return deserialize_value(process._args[0], ExecuteExternalJobArgs)  # type: ignore[attr-defined]


def sources_of_run(args: WorkerArgs, project: Project) -> set[str] | None:
    """The configured sources the run needs: those its asset selection names, else its job's
    source. None when that is not a configured source (a location-wide job such as
    `sink_policies`, or no selection): then the run gets every source."""
    names = {*project.config.sources, *(broken.name for broken in project.broken)}
    ref = args.instance_ref
    with dg.DagsterInstance.from_ref(ref) if ref else dg.DagsterInstance.get() as instance:
        run = instance.get_run_by_id(args.run_id)
        if run is None:
            return None
        keys = [*(run.asset_selection or ()), *(c.asset_key for c in run.asset_check_selection or ())]
        wanted = {source_of(key) for key in keys}
        if not wanted:
            source = job_source(run.job_name, names)
            wanted = {source} if source else set()
        if not wanted or not wanted <= names:
            return None
        instance.report_engine_event(
            f"pull_pipeline: this run worker built {len(wanted)} of {len(names)} sources "
            f"({', '.join(sorted(wanted))}), the ones its run needs", run)
        return wanted


def job_source(job: str, names: set[str]) -> str | None:
    """The source whose job this is, if any."""
    return next((name for name in names if job in jobs_of(name)), None)


def jobs_of(source: str) -> tuple[str, ...]:
    names = SourceNames(source)
    return names.pull_job, names.replay_job, names.restore_job


def only(project: Project, sources: set[str]) -> Project:
    """`project` with only `sources` (valid or broken); the rest of its config unchanged."""
    config = project.config.model_copy(update={"sources": {
        name: source for name, source in project.config.sources.items() if name in sources}})
    return replace(project, config=config,
                   broken=tuple(broken for broken in project.broken if broken.name in sources))

