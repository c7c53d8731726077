"""1-D convolutional network for MNIST-1D style sequences."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from widthwise.reproduction.zoo._base import (
    WidthConfigurable,
    check_positive,
    check_widths,
    make_activation,
)


class CNN1D(WidthConfigurable):
    """Conv1d stack (stride 2, ``same``-style padding), flatten, linear classifier.

    Each layer is ``Conv1d(kernel_size, stride=2, padding=kernel_size // 2)`` → optional
    BatchNorm1d → activation; the last feature map is flattened into ``head``, so every output
    channel of the last conv feeds ``L_out`` consecutive input columns of the classifier.
    ``[N, length]`` inputs are treated as one channel.

    Args:
        widths: output channels of each conv layer.
        in_channels: input channels.
        length: input sequence length (40 for MNIST-1D).
        num_classes: classifier outputs.
        kernel_size: odd kernel size of every conv.
        batch_norm: add BatchNorm1d after every conv.
        activation: see :class:`~widthwise.reproduction.zoo.MLP`.

    ``widths()`` is the conv widths; ``width_slots()`` maps ``"convs.i"`` to ``widths[i]``.

    >>> net = CNN1D([16, 32, 32])
    >>> tuple(net(torch.zeros(4, 40)).shape), net.widths(), net.feature_length
    ((4, 10), [16, 32, 32], 5)
    """

    def __init__(
        self,
        widths: Sequence[int],
        in_channels: int = 1,
        length: int = 40,
        num_classes: int = 10,
        kernel_size: int = 5,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        widths = check_widths("widths", widths)
        in_channels, length, num_classes, kernel_size = (
            check_positive("in_channels", in_channels),
            check_positive("length", length),
            check_positive("num_classes", num_classes),
            check_positive("kernel_size", kernel_size),
        )
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self._set_config(
            widths=widths,
            in_channels=in_channels,
            length=length,
            num_classes=num_classes,
            kernel_size=kernel_size,
            batch_norm=batch_norm,
            activation=activation,
        )
        pad = kernel_size // 2
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        c, n = in_channels, length
        for w in widths:
            self.convs.append(nn.Conv1d(c, w, kernel_size, stride=2, padding=pad))
            self.norms.append(nn.BatchNorm1d(w) if batch_norm else nn.Identity())
            self.acts.append(make_activation(activation))
            c, n = w, (n + 2 * pad - kernel_size) // 2 + 1
        self.feature_length = n
        self.head = nn.Linear(c * n, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        for conv, norm, act in zip(self.convs, self.norms, self.acts):
            x = act(norm(conv(x)))
        return self.head(x.flatten(1))

    def widths(self) -> list[int]:
        return list(self._config["widths"])

    def width_slots(self) -> dict[str, int]:
        return {f"convs.{i}": w for i, w in enumerate(self._config["widths"])}

    def width_layers(self) -> list[str]:
        return list(self.width_slots())

    def _config_with_widths(self, widths: list[int]) -> dict:
        return {**self.config(), "widths": widths}
