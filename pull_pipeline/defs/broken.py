"""A source whose config block is invalid: shown under its own name, alerted once, never run.

The code location leaves such a source out (`load_project(contain=True)`, or a block Dagster
refuses while its definitions are built) and builds the others as usual, so their queued
runs still find their jobs. In its place the source gets `<source>/config`: an asset whose
`valid_config` check fails with the error (file, source, key, fix). The sensor
`config_<source>` records that check without a run and sends one alert per distinct error;
materializing the asset fails with the same error.

No `from __future__ import annotations` here: Dagster inspects the `context` annotations.
"""

import hashlib
import re
from typing import Any

import dagster as dg

from pull_pipeline.alerts import wording
from pull_pipeline.config.loader import BrokenSource
from pull_pipeline.config.models import MAX_SOURCE_NAME, AlertsConfig
from pull_pipeline.defs.alerting import asset_url, make_alerter
from pull_pipeline.defs.naming import CONFIG_CHECK, SOURCE_TAG, SourceNames
from pull_pipeline.defs.steps import tag_run_with_source
from pull_pipeline.redaction import redact


def shown_name(name: str) -> str:
    """`name` as an asset key, group and tag value accept it (a bad name may be the error)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)[:MAX_SOURCE_NAME] or "_"


def fix_for(broken: BrokenSource) -> str:
    return (f"correct source {broken.name!r} in {broken.file}, then reload the code location "
            "(Deployment > Reload); the other sources keep running meanwhile")


def build_broken_source(broken: BrokenSource, alerts: AlertsConfig) -> dg.Definitions:
    """`<source>/config` with its failing `valid_config` check, and the sensor that alerts."""
    names = SourceNames(shown_name(broken.name))
    error, fix = redact(broken.error), fix_for(broken)
    metadata: dict[str, Any] = {
        "source": broken.name,
        "file": broken.file,
        "error": dg.MetadataValue.md("\n".join(f"- {redact(p)}" for p in broken.problems)),
        "fix": fix,
    }

    @dg.asset(
        key=names.config,
        group_name=names.group,
        tags={SOURCE_TAG: names.source},
        metadata=metadata,
        description=f"INVALID CONFIG, source not loaded: {error}. Fix: {fix}.",
    )
    def config(context: dg.AssetExecutionContext) -> None:
        tag_run_with_source(context, names.source)
        raise dg.Failure(description=f"{error}; {fix}",
                         metadata={"source": names.source, "transient": False})

    @dg.asset_check(asset=names.config, name=CONFIG_CHECK,
                    description="The source's block in the config file is valid.")
    def valid_config() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata=metadata, description=error)

    @dg.sensor(
        name=names.config_sensor,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records the failing config check of {names.source} and alerts once per "
        "distinct error.",
    )
    def config_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        digest = hashlib.sha256(error.encode()).hexdigest()[:16]
        if context.cursor == digest:
            return dg.SensorResult(skip_reason=f"still invalid, alert sent: {error}")
        make_alerter(alerts, context.instance).send(
            wording.invalid_config(names.source, error, fix, asset_url(alerts, names.config)))
        evaluation = dg.AssetCheckEvaluation(
            asset_key=names.config, check_name=CONFIG_CHECK, passed=False,
            severity=dg.AssetCheckSeverity.ERROR, metadata=metadata, description=error)
        return dg.SensorResult(asset_events=[evaluation], cursor=digest)

    return dg.Definitions(assets=[config], asset_checks=[valid_config], sensors=[config_sensor])
