"""Add a source to sources.yaml as text, so that every comment and blank line stays.

Re-dumping the parsed YAML would drop comments and reorder keys, so the new block is text
inserted at the end of the `sources:` mapping (before the next top-level key). The result
is validated with the project's loader before it replaces the file, by rename from a
temporary file in the same folder: the file is never seen half-written.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pull_pipeline.config.loader import parse_config, read_yaml
from pull_pipeline.errors import ConfigError

_SOURCES = re.compile(r"^sources:\s*(#.*)?$")
_TOP_LEVEL = re.compile(r"^[^\s#]")
NEW_FILE = "# pull_pipeline sources; see the README's configuration reference.\n\nsources:\n"


class _BlockDumper(yaml.SafeDumper):
    """Multi-line text (a SQL query) as a `|` block, as a person would write it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _text)


def render_block(name: str, block: dict[str, Any], indent: int = 2) -> str:
    """`name:` and its keys as YAML, indented to sit under `sources:`."""
    text = yaml.dump({name: block}, Dumper=_BlockDumper, sort_keys=False,
                     default_flow_style=None, width=88)
    return "".join(" " * indent + line if line.strip() else line
                   for line in text.splitlines(keepends=True))


def with_source(text: str, name: str, block: dict[str, Any]) -> str:
    """`text` with the source appended to its `sources:` mapping (added when missing)."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    found = [i for i, line in enumerate(lines) if _SOURCES.match(line)]
    if not found:
        return "".join(lines) + ("\n" if lines else "") + "sources:\n" + render_block(name, block)
    start = found[0]
    end = next((i for i in range(start + 1, len(lines)) if _TOP_LEVEL.match(lines[i])),
               len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
        end -= 1  # blank lines and comments right above the next key belong to that key
    entries = [line for line in lines[start + 1:end] if line.strip()
               and not line.lstrip().startswith("#")]
    indent = len(entries[0]) - len(entries[0].lstrip()) if entries else 2
    gap = ["\n"] if entries else []
    return "".join(lines[:end] + gap + [render_block(name, block, indent)] + lines[end:])


def add_source(path: Path, name: str, block: dict[str, Any]) -> str:
    """Append the source to the config file; return the text written.

    Refused, leaving the file as it was, when the result does not load, when the loaded
    sources differ from the old ones plus this one, or when the file changed meanwhile.
    """
    original = path.read_text() if path.exists() else NEW_FILE
    old = parse_config(read_yaml(original), origin=str(path)) if path.exists() else None
    updated = with_source(original, name, block)
    new = parse_config(read_yaml(updated), origin=f"{path} with source {name!r} added")
    expected = type(new.sources[name]).model_validate(block) if name in new.sources else None
    others = {k: v for k, v in new.sources.items() if k != name}
    if new.sources.get(name) != expected or (old is not None and others != old.sources):
        raise ConfigError(f"{path}: could not add {name!r} under sources: without changing "
                          "other entries (unusual layout?); add the block printed above by hand")
    _replace(path, original if old is not None else None, updated)
    return updated


def _replace(path: Path, expected: str | None, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        current = path.read_text() if path.exists() else None
        if current != expected:
            raise ConfigError(f"{path} changed while the source was being added; nothing was "
                              "written, run init-source again")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
