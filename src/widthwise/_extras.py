"""Optional dependencies: import them on demand, or say in one line how to install them.

The core needs none of the extras; the integrations (``lightning``, ``hf``, ``tensorboard``) and
the reproduction harness (``reproduce``) call :func:`require` when they first need one.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency of an integration is not installed; the message gives the fix."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise a one-line :class:`MissingExtraError` naming the install command.

    >>> require("math", "none", "nothing").pi > 3
    True
    >>> require("no_such_module_xyz", "lightning", "WidthCallback")
    Traceback (most recent call last):
    ...
    widthwise._extras.MissingExtraError: WidthCallback needs no_such_module_xyz, which could not be imported (No module named 'no_such_module_xyz'): pip install "widthwise[lightning]"
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        # Name what actually failed: the framework itself, or a dependency of an installed one.
        missing = err.name or module
        raise MissingExtraError(
            f"{what} needs {missing}, which could not be imported ({err}): "
            f'pip install "widthwise[{extra}]"'
        ) from None
