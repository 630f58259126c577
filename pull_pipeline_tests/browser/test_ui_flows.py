"""The operator's UI flows, clicked through in chromium against the demo stack.

Each step leaves a screenshot in .pull_pipeline/screenshots/<test>/ (see `ui.Shots`).
"""

from __future__ import annotations

import re
from functools import partial

import pytest
from playwright.sync_api import Page, expect

from pull_pipeline.config.loader import load_project
from pull_pipeline.definitions import build_definitions
from pull_pipeline_tests.browser.stack import DevStack
from pull_pipeline_tests.browser.ui import DagsterUI, Shots

pytestmark = pytest.mark.timeout(600)

SOURCES = ("demo_api", "demo_historian")


def test_the_asset_graph_shows_each_source(ui: DagsterUI, shots: Shots) -> None:
    page = ui.open("/asset-groups")
    for source in SOURCES:
        expect(page.get_by_text(source, exact=True).first).to_be_visible()
    shots.take("asset-graph")
    for source in SOURCES:  # each source is an asset group: its graph holds raw -> readings
        page = ui.open(f"/locations/pull_pipeline/asset-groups/{source}")
        for asset in ("raw", "readings"):
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
        shots.take(f"{source}-graph")


def test_a_window_materialized_from_the_ui_shows_its_metadata(
    ui: DagsterUI, shots: Shots, stack: DevStack
) -> None:
    window = stack.windows[-1]
    ui.launch_job("pull_demo_historian", partition=window)
    shots.take("launched")
    page = ui.wait_until(
        lambda: ui.open_partition("demo_historian/readings", window),
        lambda page: page.get_by_text("rows_loaded").count() > 0,
        f"demo_historian/readings {window} to show its metadata")
    expect(page.get_by_text("Materialized").first).to_be_visible()
    for key in ("rows_loaded", "rows_rejected", "sensors", "min_ts", "max_ts"):
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    shots.take("metadata")


def test_a_failed_window_and_the_missing_ones_are_backfilled_once_the_source_is_back(
    ui: DagsterUI, shots: Shots, stack: DevStack
) -> None:
    failing = stack.windows[1]
    stack.outage(True)
    try:
        ui.launch_job("pull_demo_api", partition=failing)
        ui.wait_until(lambda: ui.open("/assets/demo_api/raw?view=partitions"),
                      lambda page: page.get_by_text("Failed (1)").count() > 0,
                      f"demo_api/raw {failing} to fail during the outage")
        shots.take("failed-during-outage")
        ui.open_partition("demo_api/raw", failing)
        shots.take("failed-window")
    finally:
        stack.outage(False)

    ui.launch_job("pull_demo_api", preset="Failed and missing")
    shots.take("backfill-launched")
    for window in stack.windows:
        ui.wait_until(partial(ui.open_partition, "demo_api/readings", window),
                      loaded, f"demo_api/readings {window} to load")
    page = ui.open("/assets/demo_api/readings?view=partitions")
    expect(page.get_by_text("Failed (0)")).to_be_visible()
    shots.take("all-loaded")
    ui.open("/overview/backfills")
    shots.take("backfills")


def test_the_automation_page_lists_each_sources_schedule_and_sensors(
    ui: DagsterUI, shots: Shots, stack: DevStack
) -> None:
    defs = build_definitions(load_project(stack.config))
    names = [s.name for s in defs.schedules or []] + [s.name for s in defs.sensors or []]
    page = ui.open("/automation")
    for source in SOURCES:
        own = [name for name in names if re.search(rf"(^|_){source}(_|$)", name)]
        assert any("schedule" in name for name in own), own
        assert any(name.startswith("recover_") for name in own), own
        for name in own:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
    page.wait_for_timeout(3000)  # each row's running/stopped toggle loads after the list
    shots.take("automation")


def loaded(page: Page) -> bool:
    return page.get_by_text("rows_loaded").count() > 0
