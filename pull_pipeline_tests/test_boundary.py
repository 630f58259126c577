"""Only the Dagster wiring knows Dagster: the work is plain Python, usable and testable alone.

`pull_pipeline/defs/` and the code locations (`definitions.py` modules) may import
`dagster` and `dagster_aws`; no other module may, directly or by importing one that does.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pull_pipeline

PACKAGE = Path(pull_pipeline.__file__).parent
DAGSTER = ("dagster", "dagster_aws")
CORE = [
    "pull_pipeline.archive", "pull_pipeline.canonical", "pull_pipeline.connectors",
    "pull_pipeline.freshness", "pull_pipeline.landing", "pull_pipeline.pipeline",
    "pull_pipeline.recovery", "pull_pipeline.scheduling", "pull_pipeline.sink",
    "pull_pipeline.sink.gaps", "pull_pipeline.storage", "pull_pipeline.storage.s3",
    "pull_pipeline.validation", "pull_pipeline.alerts", "pull_pipeline.connectors.files",
]


def knows_dagster(path: Path) -> bool:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] == "defs" or path.name == "definitions.py"


def imported(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth (lazy imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_wiring_imports_dagster() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(imported(path) & set(DAGSTER))
        for path in sorted(PACKAGE.rglob("*.py"))
        if not knows_dagster(path) and imported(path) & set(DAGSTER)
    }
    assert offenders == {}


def test_the_core_loads_without_dagster() -> None:
    """In a fresh interpreter: the first core module whose import brings Dagster in fails."""
    script = (
        "import importlib, json, sys\n"
        f"for module in {CORE!r}:\n"
        "    importlib.import_module(module)\n"
        "    loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{DAGSTER!r})\n"
        "    if loaded:\n"
        "        print(json.dumps([module, loaded[:3]]))\n"
        "        break\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=300)
    assert json.loads(done.stdout) is None


def test_the_sink_is_a_plain_object() -> None:
    from pydantic import BaseModel

    from pull_pipeline.sink import TimescaleSink

    assert issubclass(TimescaleSink, BaseModel)
    assert not any(cls.__module__.startswith("dagster") for cls in TimescaleSink.__mro__)
