"""The Dagster UI as a user clicks through it, and a screenshot per step.

Only what a user sees is used: pages by their URL, buttons and fields by their label, and
waiting means reloading a page until it shows the expected text, as a person would.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from pull_pipeline_tests.browser.stack import ROOT

SCREENSHOTS = ROOT / ".pull_pipeline" / "screenshots"  # git-ignored, kept as CI artifacts
RUN_TIMEOUT = 180.0  # one window's run, on a busy machine


class Shots:
    """Numbered full-page screenshots of one test: `<SCREENSHOTS>/<test>/NN-<step>.png`."""

    def __init__(self, page: Page, test_name: str) -> None:
        self.page = page
        self.folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]", "_", test_name)
        for old in self.folder.glob("*.png"):
            old.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def take(self, step: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{step}.png"
        self.page.screenshot(path=path, full_page=True)
        return path


class DagsterUI:
    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url

    def open(self, path: str) -> Page:
        """Go to a page and close the first-visit "Join the Dagster community" dialog."""
        self.page.goto(self.url + path, wait_until="networkidle")
        skip = self.page.get_by_role("button", name="Skip")
        if skip.count() and skip.first.is_visible():
            skip.first.click()
        return self.page

    def launch_job(self, job: str, partition: str | None = None,
                   preset: str | None = None) -> None:
        """Jobs › <job> › "Materialize all…": pick a partition (typed) or a preset such as
        "Failed and missing", then launch (a run, or a backfill for several windows)."""
        self.open(f"/locations/pull_pipeline/jobs/{job}")
        self.page.get_by_role("button", name="Materialize all…").click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog.get_by_text("Partition selection")).to_be_visible()
        if partition is not None:
            field = dialog.get_by_placeholder(re.compile("partition", re.IGNORECASE))
            field.fill(partition)
            field.press("Enter")
        if preset is not None:
            dialog.get_by_role("button", name=preset, exact=True).click()
        launch = dialog.get_by_role("button", name=re.compile(r"^Launch"))
        expect(launch).to_be_enabled()
        launch.click()
        expect(dialog).to_be_hidden(timeout=30_000)

    def open_partition(self, asset: str, partition: str) -> Page:
        return self.open(f"/assets/{asset}?view=partitions&partition={partition}")

    def wait_until(self, show: Callable[[], Page], ready: Callable[[Page], bool],
                   what: str, timeout: float = RUN_TIMEOUT) -> Page:
        """Reload with `show` until `ready` holds (runs finish in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            page = show()
            if ready(page):
                return page
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout:.0f} s for {what}")
            page.wait_for_timeout(3000)
