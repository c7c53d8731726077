"""A small 2-D U-Net with concatenation skips."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from widthwise.reproduction.zoo._base import WidthConfigurable, check_positive, check_widths


class DoubleConv(nn.Module):
    """``(conv3x3 → BN → ReLU) x 2``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class UNet(WidthConfigurable):
    """Encoder of :class:`DoubleConv` levels with 2x2 max pooling, mirrored decoder.

    Level ``i`` has width ``widths[i]``; the last level is the bottom. Each decoder level
    upsamples with ``ConvTranspose2d(widths[i+1], widths[i], 2, stride=2)``, concatenates the
    encoder's output of the same level *before* the upsampled map (so the skip channels occupy
    the first ``widths[i]`` input channels of ``dec.i.conv1``), then applies a DoubleConv. A 1x1
    conv maps ``widths[0]`` to ``num_classes`` per pixel.

    Args:
        widths: width per level, top to bottom (at least 1 level).
        in_channels: image channels.
        num_classes: output channels per pixel.

    Height and width must be divisible by ``2 ** (len(widths) - 1)``. ``widths()`` is the
    per-level widths; ``width_slots()`` maps ``enc.i.conv{1,2}``, ``up.i`` and
    ``dec.i.conv{1,2}`` to ``widths[i]``.

    >>> net = UNet([4, 8, 16], in_channels=1, num_classes=2)
    >>> tuple(net(torch.zeros(2, 1, 16, 16)).shape)
    (2, 2, 16, 16)
    """

    def __init__(self, widths: Sequence[int], in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        widths = check_widths("widths", widths)
        in_channels = check_positive("in_channels", in_channels)
        num_classes = check_positive("num_classes", num_classes)
        self._set_config(widths=widths, in_channels=in_channels, num_classes=num_classes)
        chans = [in_channels, *widths]
        self.enc = nn.ModuleList(DoubleConv(a, b) for a, b in itertools.pairwise(chans))
        self.pool = nn.MaxPool2d(2)
        levels = range(len(widths) - 1)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in levels
        )
        self.dec = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in levels)
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (len(self.enc) - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"UNet with {len(self.enc)} levels needs height and width divisible by {factor}, "
                f"got {tuple(x.shape[-2:])}; pad or crop the input"
            )
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = self.dec[i](torch.cat([skips[i], self.up[i](x)], dim=1))
        return self.head(x)

    def widths(self) -> list[int]:
        return list(self._config["widths"])

    def width_slots(self) -> dict[str, int]:
        widths = self._config["widths"]
        slots: dict[str, int] = {}
        for i, w in enumerate(widths):
            slots.update({f"enc.{i}.conv1": w, f"enc.{i}.conv2": w})
        for i in range(len(widths) - 1):
            w = widths[i]
            slots.update({f"up.{i}": w, f"dec.{i}.conv1": w, f"dec.{i}.conv2": w})
        return slots

    def width_layers(self) -> list[str]:
        # one width per level: the level's first encoder conv stands for all its layers
        return [f"enc.{i}.conv1" for i in range(len(self._config["widths"]))]

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        return {**self.config(), "widths": widths}
