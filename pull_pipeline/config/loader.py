"""Find, read and validate sources.yaml into a `Project`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from pull_pipeline.config.env import PLACEHOLDER
from pull_pipeline.config.models import PipelineConfig
from pull_pipeline.errors import ConfigError
from pull_pipeline.redaction import is_sensitive_key

CONFIG_ENV = "PULL_PIPELINE_CONFIG"
STATE_ENV = "PULL_PIPELINE_HOME"
DEFAULT_CONFIG = "sources.yaml"


@dataclass(frozen=True)
class Project:
    """A validated config plus where it lives: relative paths resolve against `root`."""

    config: PipelineConfig
    path: Path

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        """Git-ignored folder for the embedded database, local landing and Dagster's home."""
        return Path(os.environ.get(STATE_ENV) or self.root / ".pull_pipeline").resolve()

    def resolve_path(self, value: str) -> str:
        """Make a local path absolute against the config's folder; leave s3:// alone."""
        if value.startswith("s3://") or os.path.isabs(value):
            return value
        return str((self.root / value).resolve())


def config_path() -> Path:
    """`$PULL_PIPELINE_CONFIG`, else ./sources.yaml, else the repository's demo sources.yaml."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser().resolve()
    cwd = Path.cwd() / DEFAULT_CONFIG
    if cwd.exists():
        return cwd.resolve()
    return (Path(__file__).resolve().parents[2] / DEFAULT_CONFIG).resolve()


def load_project(path: str | Path | None = None) -> Project:
    """Read and validate the config; errors name the file, the source, the key and the fix."""
    file = Path(path).expanduser().resolve() if path else config_path()
    try:
        raw = read_yaml(file.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{file}: config file not found; create it or point {CONFIG_ENV} at one"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return Project(config=parse_config(raw, origin=str(file)), path=file)


_TOKEN = re.compile(r"__ppenv_([A-Za-z_][A-Za-z0-9_]*?)_ppenv__")


def read_yaml(text: str) -> Any:
    """Parse YAML in which `${NAME}` may stand unquoted, even inside `{...}` flow mappings.

    Plain YAML rejects `{value: ${KEY}}` (a `{` inside a flow mapping); the config contract
    writes it that way, so placeholders are swapped for neutral tokens while parsing.
    """
    document = yaml.safe_load(PLACEHOLDER.sub(r"__ppenv_\1_ppenv__", text)) or {}
    return _restore(document)


def _restore(value: Any) -> Any:
    if isinstance(value, dict):
        return {_restore(k): _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    if isinstance(value, str):
        return _TOKEN.sub(r"${\1}", value)
    return value


def parse_config(raw: Any, origin: str = "<config>") -> PipelineConfig:
    """Validate a parsed YAML document, turning pydantic's report into one readable error."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping with 'sources:'")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(error, raw) for error in exc.errors()]
        raise ConfigError(f"{origin}: invalid config:\n  " + "\n  ".join(dict.fromkeys(lines))) from None


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    shown, models_on_path = _walk(error["loc"])
    where = ".".join(shown)
    prefix = f"source {shown[1]!r}: " if len(shown) > 1 and shown[0] == "sources" else ""
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = models_on_path[-2] if len(models_on_path) >= 2 else None
        fields = sorted(getattr(parent, "model_fields", {}) or {})
        allowed = f"; allowed keys here: {', '.join(fields)}" if fields else ""
        return f"{prefix}unknown key {where!r} (check the spelling){allowed}"
    if kind == "missing":
        return f"{prefix}{where}: required key is missing"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return (f"{prefix}{where}.{ctx.get('discriminator', 'type').strip(chr(39))}: must be one "
                f"of {ctx.get('expected_tags')} (got {ctx.get('tag')!r})")
    if kind == "union_tag_not_found":
        disc = str(error.get("ctx", {}).get("discriminator", "type")).strip("'")
        return f"{prefix}{where}: needs a {disc!r} key"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{prefix}{where}: {message}{_got(shown, error.get('input'))}"


def _walk(loc: tuple[Any, ...]) -> tuple[list[str], list[Any]]:
    """Follow an error location through the models; drop the union tags pydantic inserts.

    Returns the location as a user wrote it and the type reached at each step, so an
    unknown key can be reported together with the keys allowed beside it.
    """
    current: Any = PipelineConfig
    shown: list[str] = []
    reached: list[Any] = [current]
    for part in loc:
        current = _unwrap(current)
        if get_origin(current) is Union:
            tagged = _tagged_member(current, part)
            if tagged is not None:
                current = tagged
                reached[-1] = tagged
                continue
        shown.append(str(part))
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            current = field.annotation if field else None
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            current = None
        reached.append(_unwrap(current))
    return shown, reached


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that carries the keys."""
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
            continue
        if get_origin(tp) in (Union, UnionType):
            members = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
            return Union[tuple(members)]  # noqa: UP007 - built at run time from a tuple
        return tp


def _tagged_member(union: Any, tag: Any) -> Any:
    for member in get_args(union):
        member = _unwrap(member)
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        for key in ("kind", "type"):
            field = member.model_fields.get(key)
            if field is not None and tag in get_args(field.annotation):
                return member
    return None


def _got(shown: list[str], value: Any) -> str:
    """` (got <value>)`, except for a whole block or a credential's value.

    A block's text can hold credentials written in the file, which nothing has registered
    for redaction yet, and this message is shown wherever the code location fails to load.
    """
    if isinstance(value, dict | list) or any(is_sensitive_key(p) or p == "auth" for p in shown):
        return ""
    return f" (got {_short(value)})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
