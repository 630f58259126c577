"""dlt on the same workload, for comparison: rest_api -> postgres, sql_database -> postgres.

dlt is not a dependency of the project. `--dlt-python` names an interpreter that has it
(`python -m venv /tmp/dltvenv && /tmp/dltvenv/bin/pip install "dlt[postgres]==1.31.0"
sqlalchemy pyarrow`); this file is then run by that interpreter as a script, in a fresh
process per run, and measured like the project's own runs (wall time, peak RSS, checksum).
"""

from __future__ import annotations

import argparse
from pathlib import Path

if __package__:  # imported by benchmarks.run (the project's interpreter)
    from benchmarks.database import table_checksum
    from benchmarks.materialize import measure
    from benchmarks.workload import Checksum, Workload

SCRIPT = Path(__file__).resolve()


def run_dlt(python: str, kind: str, url: str, api_key: str, workload: Workload, source_dsn: str,
            sink_dsn: str, workdir: Path, round_: int) -> tuple[float, float, Checksum]:
    """Run dlt's `kind` pipeline once in a fresh process: seconds, peak RSS (MB), checksum."""
    dataset = f"dlt_{kind}_{round_}"
    command = [python, str(SCRIPT), kind, "--url", url, "--api-key", api_key,
               "--start", str(int(workload.start.timestamp())),
               "--end", str(int(workload.end.timestamp())),
               "--source-dsn", source_dsn, "--sink-dsn", sink_dsn, "--dataset", dataset,
               "--pipelines-dir", str(workdir / "dlt")]
    log = workdir / f"dlt-{kind}-{round_}.log"
    run = measure(command, {"RUNTIME__DLTHUB_TELEMETRY": "false"}, log)
    if run.returncode != 0:
        raise RuntimeError(f"dlt {kind} failed (exit {run.returncode}); see {log}")
    relation = (
        f"(SELECT sensor_tag, to_timestamp(relative_time) AS ts, sensor_value "
        f"FROM {dataset}.readings) AS t" if kind == "rest" else
        f"(SELECT sensor_tag, recorded_at AS ts, sensor_value FROM {dataset}.bench_source) AS t"
    )
    return run.seconds, run.peak_rss_mb, table_checksum(sink_dsn, relation)


def main() -> None:
    """The dlt side (runs under the dlt interpreter; imports nothing from the project)."""
    import dlt

    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("rest", "sql"))
    for option in ("--url", "--api-key", "--start", "--end", "--source-dsn", "--sink-dsn",
                   "--dataset", "--pipelines-dir"):
        parser.add_argument(option, required=True)
    args = parser.parse_args()
    pipeline = dlt.pipeline(
        pipeline_name=args.dataset,
        destination=dlt.destinations.postgres(_with_password(args.sink_dsn)),
        dataset_name=args.dataset, pipelines_dir=args.pipelines_dir,
    )
    if args.kind == "rest":
        from dlt.sources.rest_api import rest_api_source

        base, _, path = args.url.rpartition("/")
        source = rest_api_source({
            "client": {
                "base_url": base + "/",
                "auth": {"type": "api_key", "name": "X-API-Key", "api_key": args.api_key,
                         "location": "header"},
                "paginator": {"type": "page_number", "base_page": 1, "page_param": "page",
                              "total_path": None},
            },
            "resources": [{
                "name": "readings",
                "endpoint": {"path": path, "data_selector": "data",
                             "params": {"start": args.start, "end": args.end,
                                        "page_size": 10_000}},
            }],
        })
        info = pipeline.run(source)
    else:
        from dlt.sources.sql_database import sql_table

        credentials = _with_password(args.source_dsn).replace(
            "postgresql://", "postgresql+psycopg2://", 1)  # SQLAlchemy 2.1 defaults to psycopg 3
        table = sql_table(credentials=credentials, table="bench_source", backend="pyarrow",
                          chunk_size=100_000)
        info = pipeline.run(table, loader_file_format="csv")
    print(info)


def _with_password(dsn: str) -> str:
    """dlt insists on a password; a trust-auth server ignores the placeholder."""
    scheme, _, rest = dsn.partition("://")
    user, at, host = rest.rpartition("@")
    if at and ":" not in user:
        return f"{scheme}://{user}:unused@{host}"
    return dsn


if __name__ == "__main__":
    main()
