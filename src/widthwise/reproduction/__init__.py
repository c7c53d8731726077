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

from widthwise._extras import MissingExtraError


def require_extra(what: str) -> None:
    """Raise one clear :class:`~widthwise._extras.MissingExtraError` when the ``reproduce``
    extra (MNIST-1D, scikit-learn) is not installed. Nothing is imported here: importing
    scikit-learn draws from the global ``random``, which the data generators protect."""
    missing = [m for m in ("mnist1d", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{what} needs {', '.join(missing)}, which is not installed: "
            'pip install "widthwise[reproduce]"'
        )
