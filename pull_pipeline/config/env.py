"""`${NAME}` placeholders, filled from the environment only when a source runs.

Resolution is late on purpose: a missing variable fails that source's runs with the
variable's name, while the rest of the project still loads. Every resolved value and every
value under a credential-like key is registered with `redaction` before it is used.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pull_pipeline.errors import ConfigError
from pull_pipeline.redaction import register_if_sensitive, register_secret

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
M = TypeVar("M", bound=BaseModel)


def resolve_env(model: M, where: str, environ: Mapping[str, str] | None = None) -> M:
    """Return a copy of `model` with every `${NAME}` replaced from the environment."""
    env = os.environ if environ is None else environ
    data = _substitute(model.model_dump(), where, env, key="")
    try:
        return type(model).model_validate(data)
    except ValidationError as exc:
        # The value came from the environment: name the key and what is wrong, never the
        # value (pydantic's own text quotes it, and it may be a secret).
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False))
        problem = ConfigError(
            f"{where}: after filling ${{NAME}} placeholders from the environment the config is "
            f"invalid ({problems}); fix the environment variable behind that key")
    raise problem


def resolve_text(
    text: str, where: str, key: str, environ: Mapping[str, str] | None = None
) -> str:
    """Replace every `${NAME}` in one value; register what it resolves to as needed."""
    env = os.environ if environ is None else environ

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(
                f"{where}: environment variable {name} is not set (used by key {key!r}); "
                f"export {name}=... before starting Dagster"
            )
        secret = env[name]
        register_secret(secret)
        return secret

    resolved = PLACEHOLDER.sub(replace, text)
    register_if_sensitive(key, resolved)
    return resolved


def _substitute(value: Any, where: str, env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, where, env, key=str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, where, env, key=key) for v in value]
    if isinstance(value, str):
        return resolve_text(value, where, key, env)
    return value
