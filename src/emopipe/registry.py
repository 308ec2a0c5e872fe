"""Registries: a param that names a choice (`model: wider`, `train.loss: focal`, `adapt.method: bn`)
is a key of one.

A registry lives beside what it registers (MODELS in modeling/models.py, METHODS in
engine/adapt.py), so a stage imports the registries of the code it runs and no others, and a
new variant is one decorated function. A name is checked where it is looked up: a bad one is
a one-line ParamError naming the param and the registered choices.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from emopipe.errors import ParamError

T = TypeVar("T")


class Registry(dict[str, T]):
    """Name -> implementation, for the param `param` (e.g. "train.loss") that picks one of `kind` (e.g. "loss")."""

    def __init__(self, param: str, kind: str):
        super().__init__()
        self.param, self.kind = param, kind

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: add the decorated object under `name`."""

        def add(entry: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = entry
            return entry

        return add

    def lookup(self, name: str, param: str | None = None) -> T:
        """The entry `name`; a ParamError naming `param` (default: the registry's) when there is none."""
        if name not in self:
            raise ParamError(f"{param or self.param}={name!r} is not a registered {self.kind}; "
                             f"choose one of: {', '.join(sorted(self))}")
        return self[name]
