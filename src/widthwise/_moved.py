"""Old import paths of modules that moved into :mod:`widthwise.probes` and
:mod:`widthwise.reproduction`.

``import widthwise.zoo`` (or ``widthwise.kernel``, ...) still works: each old name is an alias of
the module at its new place (the same module object, so ``isinstance`` checks and monkeypatching
behave as before). The aliases are resolved lazily, so importing :mod:`widthwise` does not load
the harness or its optional dependencies.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

#: old module name -> new module name (prefixes: ``widthwise.zoo.mlp`` follows ``widthwise.zoo``).
MOVED = {
    "widthwise.similarity": "widthwise.probes.similarity",
    "widthwise.kernel": "widthwise.probes.kernel",
    "widthwise.data": "widthwise.reproduction.data",
    "widthwise.zoo": "widthwise.reproduction.zoo",
    "widthwise.experiments": "widthwise.reproduction.experiments",
    "widthwise.demo": "widthwise.reproduction.demo",
    "widthwise.zoo.residual_mlp": "widthwise.probes.residual_mlp",
}


def new_name(old: str) -> str | None:
    """Where ``old`` lives now, or None when it did not move."""
    if old in MOVED:
        return MOVED[old]
    head, _, tail = old.rpartition(".")
    parent = new_name(head) if head else None
    return f"{parent}.{tail}" if parent else None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        # the module is already executed under its new name; keep its real __spec__/__name__
        pass


class AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the old names; installed once by ``widthwise/__init__.py``."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname) if fullname.startswith("widthwise.") else None
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        # first: `widthwise.zoo` is the real package, so the path finder would load
        # `widthwise.zoo.mlp` from its __path__ as a second copy of the module (other classes)
        sys.meta_path.insert(0, AliasFinder())
