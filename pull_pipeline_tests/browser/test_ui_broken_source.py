"""A broken source in the UI: shown as `<source>/config` with its error, the others untouched.

This module's stack runs the demo config plus one source whose block has a typo (see
`configure_stack`): the code location still loads, the demo sources keep their assets, and
the broken one appears as the asset `<source>/config` (pull_pipeline/defs/broken.py) whose
`valid_config` check fails with the error. Screenshots go to
.pull_pipeline/screenshots/<test>/ (see `ui.Shots`).
"""

from __future__ import annotations

import copy

import pytest
from playwright.sync_api import expect

from pull_pipeline_tests.browser.stack import Config, DevStack
from pull_pipeline_tests.browser.ui import DagsterUI, Shots

pytestmark = pytest.mark.timeout(600)

SOURCES = ("demo_api", "demo_historian")
BROKEN = "typo_source"
# What a user typing `cadense:` for `cadence:` is told (the loader's wording, file aside).
PROBLEM = (f"source '{BROKEN}': unknown key 'sources.{BROKEN}.partitions.cadense' "
           "(check the spelling); allowed keys here: cadence")
CHECK_TIMEOUT = 180.0  # the sensor `config_<source>` records the check on its first tick


def configure_stack(config: Config) -> Config:
    """The demo sources, plus a copy of demo_historian whose `cadence` key is misspelt."""
    block = copy.deepcopy(config["sources"]["demo_historian"])
    block["partitions"]["cadense"] = block["partitions"].pop("cadence")
    config["sources"][BROKEN] = block
    return config


def test_a_broken_source_is_shown_without_hiding_the_others(
    ui: DagsterUI, shots: Shots, stack: DevStack
) -> None:
    file = str(stack.config.resolve())

    # The lineage still has every source's group, the broken one's included.
    page = ui.open("/asset-groups")
    for group in (*SOURCES, BROKEN):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    shots.take("lineage-groups")

    # The catalog lists the healthy sources' assets, and the broken source as one asset.
    page = ui.open("/assets")
    for source in SOURCES:
        for asset in ("raw", "readings"):
            expect(page.get_by_role("link", name=f"{source} / {asset}").first).to_be_visible()
    expect(page.get_by_role("link", name=f"{BROKEN} / config").first).to_be_visible()
    expect(page.get_by_text(f"{BROKEN} / raw")).to_have_count(0)
    expect(page.get_by_text("INVALID CONFIG, source not loaded").first).to_be_visible()
    shots.take("catalog")

    # `<source>/config`: its description and metadata give the file, the source and the key.
    page = ui.open(f"/assets/{BROKEN}/config")
    expect(page.get_by_text(f"INVALID CONFIG, source not loaded: {file}: {PROBLEM}").first
           ).to_be_visible()
    for key in ("source", "file", "error", "fix"):
        expect(page.get_by_role("cell", name=key, exact=True).first).to_be_visible()
    expect(page.get_by_role("cell", name=file, exact=True).first).to_be_visible()
    expect(page.get_by_role("cell", name=BROKEN, exact=True).first).to_be_visible()
    expect(page.get_by_role("cell", name=PROBLEM).first).to_be_visible()
    shots.take("config-asset")

    # Its `valid_config` check failed, with the error (the sensor records it on its first tick).
    page = ui.wait_until(
        lambda: ui.open(f"/assets/{BROKEN}/config?view=checks"),
        lambda page: page.get_by_text("Evaluation result").count() > 0,
        f"{BROKEN}/config's valid_config check to be recorded", timeout=CHECK_TIMEOUT)
    expect(page.get_by_text("valid_config", exact=True).first).to_be_visible()
    expect(page.get_by_text("Failed", exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{file}: {PROBLEM}").first).to_be_visible()
    shots.take("valid-config-failed")
