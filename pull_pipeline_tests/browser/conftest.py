"""Fixtures of the browser tests: one dev stack per test module, a browser, a page.

A flow that needs another config (say, a broken source beside the demo ones) goes in its own
module, which defines `configure_stack(config: dict) -> dict`: that module's stack starts
with it. Every test gets `ui` (pages, clicks, waits) and `shots` (a screenshot per step).
Chromium is Debian's (`make test-browser` installs it as root); without it, without
Playwright or without the embedded PostgreSQL the tests skip, saying why. A module's stack
stops in the background while the next module's starts (about 15 s saved per module); the
session waits for every stop, and a stack that did not stop cleanly fails the last test.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pull_pipeline_tests.browser.stack import DevStack, running_stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from pull_pipeline_tests.browser.ui import DagsterUI, Shots

CHROMIUM = Path(os.environ.get("PULL_PIPELINE_CHROMIUM", "/usr/bin/chromium"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a browser test: `-m browser` selects them, `-m 'not browser'` not."""
    for item in items:
        if Path(__file__).parent in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


class Stopping:
    """Stacks being stopped in the background, and what went wrong stopping them."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def stop(self, stack: AbstractContextManager[DevStack]) -> None:
        def run() -> None:
            try:
                stack.__exit__(None, None, None)
            except BaseException as exc:  # noqa: BLE001 - reported by `join`
                self.errors.append(exc)

        thread = threading.Thread(target=run, name="stop-dev-stack")
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]


@pytest.fixture(scope="session")
def stopping() -> Iterator[Stopping]:
    pending = Stopping()
    yield pending
    pending.join()


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          stopping: Stopping) -> Iterator[DevStack]:
    if importlib.util.find_spec("pgserver") is None:
        pytest.skip("the dev stack's embedded PostgreSQL (pgserver) needs CPython 3.11 or 3.12")
    configure = getattr(request.module, "configure_stack", lambda config: config)
    starting = running_stack(tmp_path_factory.mktemp("dev"), configure)
    running = starting.__enter__()  # a failed start has stopped what it started (see stack.py)
    try:
        yield running
    finally:
        stopping.stop(starting)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: as root, `apt-get install -y chromium` "
                    "(make test-browser does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=["--no-sandbox"])  # CI runs as root
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(60_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def ui(page: Page, stack: DevStack) -> DagsterUI:
    from pull_pipeline_tests.browser.ui import DagsterUI

    return DagsterUI(page, stack.url)


@pytest.fixture
def shots(page: Page, request: pytest.FixtureRequest) -> Shots:
    from pull_pipeline_tests.browser.ui import Shots

    return Shots(page, request.node.name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: a UI flow in chromium against `make dev`")
