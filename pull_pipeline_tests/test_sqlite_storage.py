"""The shipped dagster.yaml's SQLite storage: Dagster's own files, engines kept per file."""


from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster import AssetExecutionContext

from pull_pipeline.defs import sqlite_storage
from pull_pipeline.defs.sqlite_storage import KeptEnginesEventLogStorage

ROOT = Path(__file__).parents[1]


@dg.asset(partitions_def=dg.StaticPartitionsDefinition([f"p{n}" for n in range(20)]))
def numbers(context: AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partition": context.partition_key})


def test_the_shipped_storage_keeps_dagsters_files_and_reuses_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty runs under the shipped dagster.yaml store their events where Dagster's default
    SQLite storage does (readable by a plain instance), with an engine per database file,
    not one per statement (Dagster's own builds one for each of a run's dozen events)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    created: list[str] = []
    create_engine = sqlite_storage.create_engine

    def counting(url: str, **kwargs: Any) -> Any:
        created.append(url)
        return create_engine(url, **kwargs)

    monkeypatch.setattr(sqlite_storage, "create_engine", counting)
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, KeptEnginesEventLogStorage)
        for n in range(20):
            assert dg.materialize([numbers], instance=instance, partition_key=f"p{n}").success
        runs = instance.get_runs()
    assert len(runs) == 20
    assert len(created) == len(set(created)) == 21  # one a file (each run's, the index)
    assert (home / "history" / "runs" / f"{runs[0].run_id}.db").is_file()
    settings = {key: value for key, value in yaml.safe_load(
        (home / "dagster.yaml").read_text()).items() if key != "storage"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings))  # Dagster's default storage
    with dg.DagsterInstance.get() as plain:
        assert not isinstance(plain.event_log_storage, KeptEnginesEventLogStorage)
        events = plain.fetch_materializations(dg.AssetKey("numbers"), limit=100).records
        assert sorted(str(e.partition_key) for e in events) == sorted(f"p{n}" for n in range(20))
        kinds = {e.dagster_event_type for e in plain.all_logs(runs[0].run_id)}
        assert dg.DagsterEventType.ASSET_MATERIALIZATION in kinds
