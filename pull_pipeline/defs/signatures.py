"""Each asset, check and op function's signature, worked out once instead of ~17 times.

Dagster calls `inspect.signature` on an asset's function about 17 times while it builds
the asset (resource arguments, inputs, config, context), and each source brings half a
dozen such functions: at 500 sources that was about a fifth of building the definitions.
`inspect.signature` returns a function's `__signature__` when it has one, so setting it
once gives Dagster the same answer for a fraction of the cost.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def signed(fn: F) -> F:
    """`fn`, carrying its own signature (apply below Dagster's decorator)."""
    fn.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return fn
