"""Lazy attributes for packages whose modules pull in heavy machinery (peft, lm-eval, matplotlib, papermill)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from typing import Any


def lazy_attributes(package: str, modules: Iterable[str], names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports a submodule in `modules`, or the submodule holding a name in
    `names` (name -> submodule), on first access."""
    submodules = frozenset(modules)

    def __getattr__(name: str) -> Any:
        if name in submodules:
            return import_module(f".{name}", package)
        if name in names:
            return getattr(import_module(f".{names[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
