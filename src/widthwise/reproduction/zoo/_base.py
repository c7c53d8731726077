"""The rebuild contract shared by every zoo model (see :mod:`widthwise.reproduction.zoo`)."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from torch import nn

M = TypeVar("M", bound="WidthConfigurable")

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def check_widths(name: str, widths: Sequence[int], *, allow_empty: bool = False) -> list[int]:
    """Validate a list of positive integer widths and return it as a plain list."""
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Iterable):
        raise ValueError(f"{name} must be a list of positive integers, got {widths!r}")
    widths = list(widths)
    if not widths and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    try:
        return [check_positive(name, w) for w in widths]
    except ValueError:
        raise ValueError(f"{name} must be a list of positive integers, got {widths!r}") from None


def check_positive(name: str, value: Any) -> int:
    """``value`` as a plain ``int`` (NumPy and torch integers accepted), at least 1."""
    try:
        out = operator.index(value)
    except TypeError:
        out = None
    if isinstance(value, bool) or out is None or out < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return out


def scale_width(width: int, mult: float) -> int:
    """``round(width * mult)``, at least 1."""
    if not mult > 0:
        raise ValueError(f"width_mult must be > 0, got {mult!r}")
    return max(1, round(width * mult))


class WidthConfigurable(nn.Module):
    """Mixin: ``config()``, ``from_config()``, ``widths()``, ``width_slots()``, ``with_widths()``.

    Subclasses record their validated constructor arguments with :meth:`_set_config` and
    implement :meth:`widths`, :meth:`width_slots`, :meth:`width_layers` and
    :meth:`_config_with_widths`.
    """

    _config: dict[str, Any]

    def _set_config(self, **kwargs: Any) -> None:
        self._config = copy.deepcopy(kwargs)

    def config(self) -> dict[str, Any]:
        """The constructor arguments (a deep copy): ``type(m).from_config(m.config())`` rebuilds."""
        return copy.deepcopy(self._config)

    @classmethod
    def from_config(cls: type[M], config: dict[str, Any]) -> M:
        """A freshly initialised model built from :meth:`config`'s dict."""
        return cls(**copy.deepcopy(config))

    def width_slots(self) -> dict[str, int]:
        """``{module name: configured output width}`` for every hidden producing layer."""
        raise NotImplementedError

    def widths(self) -> list[int]:
        """The configurable widths, as a flat list (order documented per model)."""
        raise NotImplementedError

    def width_layers(self) -> list[str]:
        """For each entry of :meth:`widths`, the slot (layer name) whose output width it sets.

        With a plan's new width per layer, ``[plan.get(n, w) for n, w in
        zip(m.width_layers(), m.widths())]`` is the list :meth:`with_widths` takes.
        """
        raise NotImplementedError

    def config_with_widths(self, widths: Sequence[int]) -> dict[str, Any]:
        """:meth:`config` with new :meth:`widths`, for ``from_config`` or a checkpoint."""
        return self.with_widths(widths).config()

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        raise NotImplementedError

    def with_widths(self: M, widths: Sequence[int]) -> M:
        """A freshly initialised model of the same configuration with new :meth:`widths`."""
        widths = check_widths("widths", widths, allow_empty=True)
        n = len(self.widths())
        if len(widths) != n:
            raise ValueError(
                f"{type(self).__name__} has {n} configurable widths, got {len(widths)}; "
                "pass a list shaped like model.widths()"
            )
        return type(self).from_config(self._config_with_widths(widths))
