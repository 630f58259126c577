"""Resolve a source's asset jobs against that source's assets only, not the whole location.

Dagster resolves every `define_asset_job` against the location's whole asset graph: its
`_subset_assets_defs` walks every asset definition once per job, so N sources with three
jobs each cost O(N²) to load (see README, Performance). A source's
job selects only that source's assets, whose upstream assets are the source's own, so the
source's slice of the graph resolves to the same job, in time that does not grow with N.
The slice also serves run-time subsets of the job (a run of `readings` only).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping
from weakref import WeakKeyDictionary

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)

from pull_pipeline.defs.naming import SOURCE_TAG, source_of


class SourceAssetJob(UnresolvedAssetJobDefinition):
    """An asset job of one source (named by its `SOURCE_TAG` tag), resolved on its slice."""

    def resolve(
        self,
        asset_graph: AssetGraph,
        default_executor_def: dg.ExecutorDefinition | None = None,
        resource_defs: Mapping[str, dg.ResourceDefinition] | None = None,
    ) -> dg.JobDefinition:
        source = (self.tags or {})[SOURCE_TAG]
        return super().resolve(source_slice(asset_graph, source), default_executor_def,
                               resource_defs)


class _Slices:
    """The slices of one location graph, each built on first use (jobs resolve lazily).

    It holds no reference to that graph: the cache below must not keep it alive."""

    def __init__(self, graph: AssetGraph) -> None:
        self._keys: dict[str, list[dg.AssetKey]] = defaultdict(list)
        for key in graph.get_all_asset_keys():
            self._keys[source_of(key)].append(key)
        self._built: dict[str, AssetGraph] = {}

    def get(self, graph: AssetGraph, source: str) -> AssetGraph:
        if source not in self._built:
            keys = self._keys.get(source, [])
            checks = [check for key in keys for check in graph.get(key).check_keys]
            self._built[source] = AssetGraph.from_assets(graph.assets_defs_for_keys([*keys, *checks]))
        return self._built[source]


_SLICES: WeakKeyDictionary[AssetGraph, _Slices] = WeakKeyDictionary()
_LOCK = threading.Lock()  # the code server resolves jobs from several threads


def source_slice(graph: AssetGraph, source: str) -> AssetGraph:
    """The assets of `source` (keys `<source>/...`) with their checks, as their own graph."""
    with _LOCK:
        slices = _SLICES.get(graph)
        if slices is None:
            slices = _SLICES[graph] = _Slices(graph)
        return slices.get(graph, source)
