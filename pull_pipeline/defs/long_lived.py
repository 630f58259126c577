"""Take the definitions a process loaded out of the garbage collector's full scans.

A code server or run worker keeps its definitions until it exits. With hundreds of sources
they are millions of objects, which every full collection scans again while Dagster resolves
the jobs and snapshots them, a sizeable share of the load's CPU (see README, Performance).
`gc.freeze` moves every object alive now to the permanent generation, which collections
skip. Only the entry points Dagster loads call this; tests that build many definitions do not.
"""

from __future__ import annotations

import gc

import dagster as dg


def kept_for_the_process(defs: dg.Definitions) -> dg.Definitions:
    """`defs`, after freezing what is alive (it lives as long as the process)."""
    gc.freeze()
    return defs
