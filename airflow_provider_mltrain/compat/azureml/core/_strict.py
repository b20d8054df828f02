"""Attribute setting that refuses Azure names this layer lacks, instead of storing them unused."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, ClassVar


class Strict:
    """``obj.unknown = value`` raises ``AttributeError`` naming the attribute and what to use.

    A plain Python object would keep the value and the run would go on without it: the silent
    kind of difference a migration must not hit.
    """

    _azure_hints: ClassVar[dict[str, str]] = {}
    _known: ClassVar[frozenset[str]] = frozenset()  # instance attributes of a plain class

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in self._known and not hasattr(type(self), name):
            names: set[str] = {f.name for f in fields(self)} if is_dataclass(self) else set()
            if name not in names:
                hint = self._azure_hints.get(name) or "it has no counterpart in mltrain"
                raise AttributeError(f"mltrain: {type(self).__name__}.{name} is not available: {hint}.")
        super().__setattr__(name, value)
