"""The code location's cost per source does not grow with the number of sources.

Loading 500 sources used to take 20-60 s of CPU (by how busy the machine was), because
Dagster resolved every source's jobs against the whole location (`_subset_assets_defs` walking every asset for
every job). Timings on a shared machine are noisy, so the quadratic part is asserted on
the work itself (asset definitions walked per job); CPU time and memory over 1 to 1,000
sources are measured by the benchmark (`make bench-fleet`), never by a timed test.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.assets.job import asset_job
from dagster._core.remote_representation.external_data import RepositorySnap

from pull_pipeline.config.loader import load_project
from pull_pipeline.definitions import build_definitions
from pull_pipeline_tests.fleet_sources import write_fleet_config

SMALL, LARGE = 20, 80


def load_location(path: Path) -> dg.RepositoryDefinition:
    """What a code server does: build, resolve every job, snapshot the repository."""
    repository = build_definitions(load_project(path)).get_repository_def()
    repository.get_all_jobs()
    RepositorySnap.from_def(repository)
    return repository


@pytest.fixture
def walked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many asset definitions each `_subset_assets_defs` call walks."""
    counts: list[int] = []
    real = asset_job._subset_assets_defs

    def counting(assets: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        assets = list(assets)
        counts.append(len(assets))
        return real(assets, *args, **kwargs)

    monkeypatch.setattr(asset_job, "_subset_assets_defs", counting)
    yield counts


def test_jobs_resolve_on_their_source_only(tmp_path: Path, walked: list[int]) -> None:
    walks = {}
    for count in (SMALL, LARGE):
        walked.clear()
        repository = load_location(write_fleet_config(count, tmp_path / str(count)))
        walks[count] = max(walked)
    assert walks[LARGE] == walks[SMALL], walks  # before: grew with the number of sources
    job = repository.get_job("replay_fleet_0001")
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey(["fleet_0001", "readings"])}
    assert {key.path[0] for key in job.asset_layer.asset_graph.get_all_asset_keys()} == {"fleet_0001"}


def test_no_warnings(tmp_path: Path) -> None:
    """Not one warning per source: Dagster's known ones are filtered (defs/dagster_warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_location(write_fleet_config(3, tmp_path))
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_built_once_per_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster calls the entry point twice in one load (to find it, then to build the
    repository): the sources are built once, and again only when what they are made of
    changes (defs/long_lived.py)."""
    from dagster._core.definitions.definitions_load_context import (
        DefinitionsLoadContext,
        DefinitionsLoadType,
    )
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._grpc.utils import get_loadable_targets

    from pull_pipeline import definitions
    from pull_pipeline.config.loader import CONFIG_ENV

    builds: list[int] = []
    real = definitions.build_definitions

    def counting(project: Any, *args: Any) -> dg.Definitions:
        builds.append(len(project.config.sources))
        return real(project, *args)

    monkeypatch.setattr(definitions, "build_definitions", counting)
    config = write_fleet_config(2, tmp_path)
    monkeypatch.setenv(CONFIG_ENV, str(config))

    def load() -> dg.RepositoryDefinition:
        """As a code server loads: found in an initialization context, then reconstructed."""
        DefinitionsLoadContext.set(DefinitionsLoadContext(DefinitionsLoadType.INITIALIZATION))
        get_loadable_targets(python_file=None, module_name=definitions.__name__,
                             package_name=None, autoload_defs_module_name=None,
                             working_directory=None, attribute="defs", resolve_lazy_defs=True)
        return ReconstructableRepository.for_module(definitions.__name__, "defs").get_definition()

    monkeypatch.setattr(DefinitionsLoadContext, "_instance", None)  # restored after the test
    first = load()
    assert builds == [2]
    assert load() is first and builds == [2]
    config.write_text(config.read_text().replace("fleet_0001", "fleet_0009"))
    assert load().has_job("pull_fleet_0009") and builds == [2, 2]
    monkeypatch.setenv("PULL_PIPELINE_TEST_UNRELATED", "1")  # the environment is an input
    load()
    assert builds == [2, 2, 2]


def test_function_signatures_are_worked_out_once(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster inspects each asset, check and op function about 17 times while building it;
    they carry their signature (defs/signatures.py), so the slow path runs about once."""
    import inspect

    calls = {"n": 0}
    real = inspect._signature_from_function  # type: ignore[attr-defined]

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        return real(*args, **kwargs)

    project = load_project(write_fleet_config(SMALL, tmp_path))
    monkeypatch.setattr(inspect, "_signature_from_function", counting)
    build_definitions(project)
    assert calls["n"] / SMALL <= 40  # about 104 a source when every call worked it out again
