"""Open registries: config blocks whose class is chosen by a tag (`kind:`, `type:`).

A class registers with `@registry.register`, and from then on the config accepts its tag:
the tag is looked up when a block is validated, so nothing is rebuilt and a plugin module
only has to be imported before the config loads. Unlike a closed pydantic union, the list
of choices in an error message is what is registered at that moment.

Built-in entries may be `"module:Class"` strings, imported on first use, so loading the
config neither imports a connector nor creates an import cycle with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema, PydanticKnownError, core_schema

M = TypeVar("M", bound=BaseModel)
C = TypeVar("C", bound=type[BaseModel])


class Registry(Generic[M]):
    """Subclasses of `base` by the value of their `key` field; usable in `Annotated[base, ...]`."""

    def __init__(self, key: str, base: type[M], builtins: Mapping[str, str] | None = None) -> None:
        self.key = key
        self.base = base
        self._entries: dict[str, type[M] | str] = dict(builtins or {})

    def register(self, cls: C) -> C:
        """Accept `cls` under the one value of its `Literal` tag field (a class decorator)."""
        model: type[BaseModel] = cls
        if not issubclass(model, self.base):
            raise TypeError(f"{cls.__qualname__} must subclass {self.base.__qualname__}")
        tag = self.tag_of(model)
        known = self._entries.get(tag)
        if known is not None and known not in (model, _dotted(model)):
            raise ValueError(f"{self.key} {tag!r} is already registered ({_dotted(known)})")
        self._entries[tag] = model
        return cls

    def tag_of(self, cls: type[BaseModel]) -> str:
        """The tag a class declares as `<key>: Literal["<tag>"]`."""
        field = cls.model_fields.get(self.key)
        values = get_args(field.annotation) if field else ()
        if field is None or get_origin(field.annotation) is not Literal or len(values) != 1:
            raise TypeError(f"{cls.__qualname__} must declare {self.key}: Literal['<name>']")
        return str(values[0])

    def choices(self) -> list[str]:
        """The registered tags, built-ins first, in the order they were registered."""
        return list(self._entries)

    def get(self, tag: object) -> type[M] | None:
        """The class registered for `tag`, importing a built-in on first use; None if unknown."""
        entry = self._entries.get(tag) if isinstance(tag, str) else None
        if isinstance(entry, str):
            module, _, name = entry.partition(":")
            entry = getattr(import_module(module), name)
            self._entries[str(tag)] = entry
        return entry

    def validate(self, value: Any) -> M:
        """A block as the class its tag names (an instance of `base` passes as it is)."""
        if isinstance(value, self.base):
            return value
        if not isinstance(value, dict):
            raise PydanticKnownError("dict_type")
        if self.key not in value:
            raise PydanticKnownError("union_tag_not_found", {"discriminator": repr(self.key)})
        cls = self.get(value[self.key])
        if cls is None:
            raise PydanticKnownError("union_tag_invalid", {
                "discriminator": repr(self.key),
                "tag": str(value[self.key]),
                "expected_tags": ", ".join(map(repr, self.choices())),
            })
        return cls.model_validate(value)  # its errors keep their location below this block

    def __get_pydantic_core_schema__(
        self, source_type: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(self.validate)


def _dotted(entry: type[Any] | str) -> str:
    return entry if isinstance(entry, str) else f"{entry.__module__}:{entry.__qualname__}"
