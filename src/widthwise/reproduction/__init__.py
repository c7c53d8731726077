"""The reproduction harness: reference models, local data sets, width sweeps, the demo.

Nothing in the core imports it. It needs the ``reproduce`` extra (scikit-learn's digits,
MNIST-1D): ``pip install "widthwise[reproduce]"``.

* :mod:`widthwise.reproduction.zoo` — width-configurable reference models.
* :mod:`widthwise.reproduction.data` — MNIST-1D, digits, teacher-student, graphs, text; no
  downloads.
* :mod:`widthwise.reproduction.experiments` — width sweeps and the streamlining proof
  (``widthwise reproduce``).
* :mod:`widthwise.reproduction.demo` — ``widthwise demo``.
"""

from __future__ import annotations

import importlib.util

#: import name -> distribution name of what the ``reproduce`` extra installs
EXTRA = {"mnist1d": "mnist1d", "sklearn": "scikit-learn"}


def require_extra(what: str) -> None:
    """Raise one clear ImportError when the ``reproduce`` extra is not installed."""
    missing = [dist for mod, dist in EXTRA.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise ImportError(
            f"{what} needs {', '.join(missing)}: install the harness extra with "
            "pip install 'widthwise[reproduce]'"
        )
