"""Multi-layer perceptron with one width per hidden layer."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from widthwise.reproduction.zoo._base import (
    WidthConfigurable,
    check_positive,
    check_widths,
    make_activation,
)


class MLP(WidthConfigurable):
    """``in_features → widths[0] → … → widths[-1] → out_features``, activation between layers.

    Inputs with more than two dimensions are flattened after the batch dimension, so an
    ``[N, 8, 8]`` image batch works with ``in_features=64``.

    Args:
        in_features: input size (after flattening).
        widths: hidden widths, one per hidden layer (may be empty: a linear model).
        out_features: output size.
        activation: ``"relu"``, ``"gelu"``, ``"tanh"``, ``"silu"`` or ``"identity"``.
        bias: whether the linear layers have biases.

    ``widths()`` is the hidden widths; ``width_slots()`` maps ``"hidden.i"`` to ``widths[i]``.

    >>> net = MLP(64, [32, 16], 10)
    >>> tuple(net(torch.zeros(5, 8, 8)).shape), net.widths(), net.width_slots()
    ((5, 10), [32, 16], {'hidden.0': 32, 'hidden.1': 16})
    >>> net.with_widths([48, 8]).widths()
    [48, 8]
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        in_features = check_positive("in_features", in_features)
        out_features = check_positive("out_features", out_features)
        widths = check_widths("widths", widths, allow_empty=True)
        self._set_config(
            in_features=in_features,
            widths=widths,
            out_features=out_features,
            activation=activation,
            bias=bias,
        )
        sizes = [in_features, *widths]
        self.hidden = nn.ModuleList(
            nn.Linear(a, b, bias=bias) for a, b in itertools.pairwise(sizes)
        )
        self.acts = nn.ModuleList(make_activation(activation) for _ in widths)
        self.head = nn.Linear(sizes[-1], out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim > 2:
            x = x.flatten(1)
        for layer, act in zip(self.hidden, self.acts):
            x = act(layer(x))
        return self.head(x)

    def widths(self) -> list[int]:
        return list(self._config["widths"])

    def width_slots(self) -> dict[str, int]:
        return {f"hidden.{i}": w for i, w in enumerate(self._config["widths"])}

    def width_layers(self) -> list[str]:
        return list(self.width_slots())

    def _config_with_widths(self, widths: list[int]) -> dict:
        return {**self.config(), "widths": widths}
