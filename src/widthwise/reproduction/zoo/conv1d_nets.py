"""Conventional 1-D convolutional networks: VGG-style and ResNet-style, with BatchNorm.

Widths as practitioners pick them: channels doubling per stage (32-64-128-256), pooling between
stages. These are the streamlining proof's "conventional set-ups" (nothing is starved on purpose).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from widthwise.reproduction.zoo._base import WidthConfigurable, check_positive, check_widths


def _check_length(length: int, stages: int) -> int:
    length = check_positive("length", length)
    if length >> stages < 1:
        raise ValueError(f"length {length} is too short for {stages} halvings")
    return length


class VGG1D(WidthConfigurable):
    """Stages of ``convs_per_stage`` × (Conv1d k3 → BatchNorm1d → ReLU), then MaxPool1d(2).

    The last feature map is flattened into a hidden linear layer (``hidden`` wide; VGG's wide
    classifier input) and then the classifier.

    ``widths()`` is ``[*stage convs (stage-major), hidden]``; ``width_slots()`` maps
    ``"features.i"`` (the i-th conv) and ``"fc"`` to their widths.

    >>> net = VGG1D([8, 16], length=40, num_classes=5, hidden=32)
    >>> tuple(net(torch.zeros(3, 40)).shape), net.widths()
    ((3, 5), [8, 16, 32])
    """

    def __init__(
        self,
        widths: Sequence[int],
        length: int = 40,
        num_classes: int = 10,
        hidden: int = 256,
        convs_per_stage: int = 1,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        widths = check_widths("widths", widths)
        cps = check_positive("convs_per_stage", convs_per_stage)
        if len(widths) % cps:
            raise ValueError(f"{len(widths)} widths do not make stages of {cps} convs")
        stages = len(widths) // cps
        length = _check_length(length, stages)
        num_classes, hidden, in_channels = (
            check_positive("num_classes", num_classes),
            check_positive("hidden", hidden),
            check_positive("in_channels", in_channels),
        )
        self._set_config(
            widths=widths,
            length=length,
            num_classes=num_classes,
            hidden=hidden,
            convs_per_stage=cps,
            in_channels=in_channels,
        )
        layers: list[nn.Module] = []
        self._conv_index: list[int] = []
        c, n = in_channels, length
        for i, w in enumerate(widths):
            self._conv_index.append(len(layers))
            layers += [nn.Conv1d(c, w, 3, padding=1), nn.BatchNorm1d(w), nn.ReLU()]
            c = w
            if (i + 1) % cps == 0:
                layers.append(nn.MaxPool1d(2))
                n //= 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * n, hidden)
        self.act = nn.ReLU()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        return self.head(self.act(self.fc(self.features(x).flatten(1))))

    def widths(self) -> list[int]:
        return [*self._config["widths"], self._config["hidden"]]

    def width_slots(self) -> dict[str, int]:
        slots = {f"features.{j}": w for j, w in zip(self._conv_index, self._config["widths"])}
        slots["fc"] = self._config["hidden"]
        return slots

    def width_layers(self) -> list[str]:
        return list(self.width_slots())

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        return {**self.config(), "widths": widths[:-1], "hidden": widths[-1]}


class BasicBlock1D(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; a 1x1 conv + BN shortcut when
    the width or the length changes."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, inner, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(inner)
        self.conv2 = nn.Conv1d(inner, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv1d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm1d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet1D(WidthConfigurable):
    """Stem conv (k5) → stages of basic blocks (stride 2 from the second stage) → mean → head.

    Args:
        widths: output width of each stage (the residual stream's width there).
        blocks: basic blocks per stage.
        inner_widths: the width inside each block (its first conv), one per block in order;
            default: the stage width, as in ResNet-18.

    ``widths()`` is ``[*stage widths, *inner widths]``; ``width_slots()`` maps the stem and every
    block's ``conv2`` and shortcut conv to its stage width and every ``conv1`` to its inner width.

    >>> net = ResNet1D([8, 16], blocks=[1, 1], length=40, num_classes=5)
    >>> tuple(net(torch.zeros(3, 40)).shape), net.widths()
    ((3, 5), [8, 16, 8, 16])
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int] | None = None,
        inner_widths: Sequence[int] | None = None,
        length: int = 40,
        num_classes: int = 10,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        widths = check_widths("widths", widths)
        blocks = check_widths("blocks", blocks if blocks is not None else [1] * len(widths))
        if len(blocks) != len(widths):
            raise ValueError(f"blocks needs one entry per stage ({len(widths)}), got {blocks}")
        default_inner = [w for w, b in zip(widths, blocks) for _ in range(b)]
        inner = check_widths("inner_widths", inner_widths or default_inner)
        if len(inner) != len(default_inner):
            raise ValueError(f"inner_widths needs one entry per block ({len(default_inner)})")
        length = _check_length(length, len(widths) - 1)
        num_classes, in_channels = (
            check_positive("num_classes", num_classes),
            check_positive("in_channels", in_channels),
        )
        self._set_config(
            widths=widths,
            blocks=blocks,
            inner_widths=inner,
            length=length,
            num_classes=num_classes,
            in_channels=in_channels,
        )
        self.stem = nn.Conv1d(in_channels, widths[0], 5, padding=2, bias=False)
        self.stem_bn = nn.BatchNorm1d(widths[0])
        self.relu = nn.ReLU()
        layers = []
        c, k = widths[0], 0
        for s, (w, b) in enumerate(zip(widths, blocks)):
            for j in range(b):
                layers.append(BasicBlock1D(c, inner[k], w, 2 if (s > 0 and j == 0) else 1))
                c, k = w, k + 1
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            x = x.unsqueeze(1)
        x = self.blocks(self.relu(self.stem_bn(self.stem(x))))
        return self.head(x.mean(-1))

    def widths(self) -> list[int]:
        return [*self._config["widths"], *self._config["inner_widths"]]

    def width_slots(self) -> dict[str, int]:
        cfg = self._config
        slots = {"stem": cfg["widths"][0]}
        k = 0
        for w, b in zip(cfg["widths"], cfg["blocks"]):
            for _ in range(b):
                block = self.blocks[k]
                slots[f"blocks.{k}.conv1"] = cfg["inner_widths"][k]
                slots[f"blocks.{k}.conv2"] = w
                if isinstance(block.shortcut, nn.Sequential):
                    slots[f"blocks.{k}.shortcut.0"] = w
                k += 1
        return slots

    def width_layers(self) -> list[str]:
        cfg = self._config
        firsts, k = [], 0
        for b in cfg["blocks"]:
            firsts.append(f"blocks.{k}.conv2")
            k += b
        return firsts + [f"blocks.{k}.conv1" for k in range(len(cfg["inner_widths"]))]

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        n = len(self._config["widths"])
        return {**self.config(), "widths": widths[:n], "inner_widths": widths[n:]}
