"""`partition_statuses` answers exactly what Dagster's `get_status_by_partition` answers
(materialized, failed, in progress, never run), across a DST change, from one cache read."""

import threading
from collections.abc import Iterator

import dagster as dg
import pytest

from pull_pipeline.config.models import PartitionsConfig
from pull_pipeline.defs.partitions import build_partitions
from pull_pipeline.defs.statuses import partition_statuses

# Berlin's clocks went back at 03:00 on 2024-10-27: two windows are keyed 02:00, the second
# with its offset ("2024-10-27-02:00+0100").
BERLIN_HOURLY = build_partitions(PartitionsConfig.model_validate(
    {"cadence": "hourly", "start": "2024-10-26T20:00:00", "end": "2024-10-27T08:00:00",
     "timezone": "Europe/Berlin"}), "berlin")
UTC_5MIN = build_partitions(PartitionsConfig.model_validate(
    {"cadence": "5min", "start": "2024-01-01T00:00:00Z", "end": "2024-01-01T03:00:00Z"}), "fast")
RELEASE = threading.Event()


def asset_of(partitions_def: dg.TimeWindowPartitionsDefinition,
             failing: set[str], blocking: str | None) -> dg.AssetsDefinition:
    @dg.asset(name="readings", partitions_def=partitions_def)
    def readings(context: dg.AssetExecutionContext) -> None:
        if context.partition_key in failing:
            raise RuntimeError("the source refused")
        if context.partition_key == blocking:
            assert RELEASE.wait(30)

    return readings


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.mark.parametrize("partitions_def", [BERLIN_HOURLY, UTC_5MIN], ids=["berlin", "5min"])
def test_statuses_match_dagster_s_key_by_key_answer(
    instance: dg.DagsterInstance, partitions_def: dg.TimeWindowPartitionsDefinition
) -> None:
    keys = list(partitions_def.get_partition_keys())
    assert partition_statuses(instance, dg.AssetKey("readings"), keys, partitions_def) == {}
    done, failed, running = keys[1:4] + keys[-2:], {keys[5], keys[-2]}, keys[8]
    if partitions_def is BERLIN_HOURLY:
        folded = [k for k in keys if k.endswith("+0100")]
        assert folded == ["2024-10-27-02:00+0100"]
        done.append(folded[0])
    for key in done:
        dg.materialize([asset_of(partitions_def, set(), None)], partition_key=key,
                       instance=instance)
    asset = asset_of(partitions_def, failed, running)
    for key in failed:
        dg.materialize([asset], partition_key=key, instance=instance, raise_on_error=False)
    RELEASE.clear()
    worker = threading.Thread(target=dg.materialize, args=([asset],),
                              kwargs={"partition_key": running, "instance": instance})
    worker.start()
    try:
        asset_key = dg.AssetKey("readings")
        for _ in range(300):
            if instance.get_status_by_partition(asset_key, [running], partitions_def) == {
                    running: dg.AssetPartitionStatus.IN_PROGRESS}:
                break
            threading.Event().wait(0.1)
        expected = instance.get_status_by_partition(asset_key, keys, partitions_def)
        assert partition_statuses(instance, asset_key, keys, partitions_def) == expected
        assert expected is not None
        assert expected[running] == dg.AssetPartitionStatus.IN_PROGRESS
        assert expected[keys[-2]] == dg.AssetPartitionStatus.FAILED  # failed after it loaded
        assert expected[keys[1]] == dg.AssetPartitionStatus.MATERIALIZED
        assert expected[keys[0]] is None
    finally:
        RELEASE.set()
        worker.join(30)
