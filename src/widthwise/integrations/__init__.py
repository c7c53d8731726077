"""Drop-in integrations with the training loops people already have.

Each integration lives in its own submodule and imports its framework only when that submodule
is imported, so ``import widthwise`` never needs them:

* :mod:`widthwise.integrations.lightning` — ``WidthCallback`` for PyTorch Lightning
  (``pip install "widthwise[lightning]"``);
* :mod:`widthwise.integrations.hf` — ``WidthTrainerCallback`` for the Hugging Face ``Trainer``
  (``pip install "widthwise[hf]"``);
* :mod:`widthwise.integrations.tensorboard` — ``TensorBoardLogger``, usable with any
  ``WidthTracker`` (``pip install "widthwise[tensorboard]"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from widthwise._extras import MissingExtraError, require

__all__ = ["MissingExtraError", "require", "scalar_metrics"]


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The real scalars of a metrics mapping, as Python floats.

    Frameworks hand over tensors, numpy scalars and the odd non-numeric entry; the run file
    stores floats, so one-element numbers are converted and everything else is dropped.

    >>> import torch
    >>> scalar_metrics({"loss": torch.tensor(0.5), "acc": 1, "name": "x", "v": torch.ones(3)})
    {'loss': 0.5, 'acc': 1.0}
    """
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool):
            continue
        if hasattr(value, "numel"):
            if value.numel() != 1 or value.is_complex():
                continue
            value = value.detach().float().item()
        elif hasattr(value, "item") and getattr(value, "size", 1) == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(name)] = float(value)
    return out
