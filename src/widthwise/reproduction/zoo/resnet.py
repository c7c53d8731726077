"""ResNets (basic and bottleneck blocks) with per-stage and per-block widths."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from widthwise.reproduction.zoo._base import (
    WidthConfigurable,
    check_positive,
    check_widths,
    scale_width,
)

Block = Literal["basic", "bottleneck"]
Stem = Literal["cifar", "imagenet"]


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(c_out)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    # projection shortcut (option B) wherever the identity would not fit
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``inner`` is conv1's width."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c_in, inner, 3, stride)
        self.conv2, self.bn2 = _conv_bn(inner, c_out, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 (``mid1``) → 3x3 (``mid2``, carries the stride) → 1x1 (``c_out``), plus shortcut."""

    def __init__(self, c_in: int, mid1: int, mid2: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c_in, mid1, 1)
        self.conv2, self.bn2 = _conv_bn(mid1, mid2, 3, stride)
        self.conv3, self.bn3 = _conv_bn(mid2, c_out, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(WidthConfigurable):
    """A ResNet whose residual stream width is set per stage and whose block widths per block.

    Args:
        block: ``"basic"`` (two 3x3 convs) or ``"bottleneck"`` (1x1, 3x3, 1x1).
        stage_widths: width of the residual stream of each stage, i.e. every block's output
            (a bottleneck ResNet-50 has ``[256, 512, 1024, 2048]``).
        blocks_per_stage: number of blocks in each stage; stages after the first start with a
            stride-2 block.
        in_channels: image channels.
        num_classes: classifier outputs.
        stem: ``"cifar"`` (3x3 conv, stride 1) or ``"imagenet"`` (7x7 conv stride 2, max pool).
        stem_width: output channels of the stem conv. ``None``: the first stage's width for
            basic blocks (the stem then joins stage 1's residual group, as in CIFAR ResNets) and
            a quarter of it for bottlenecks (as in torchvision).
        inner_widths: one entry per block, in order: a basic block's conv1 width, or a
            bottleneck's ``[conv1, conv2]`` widths (an int sets both). ``None``: the stage width
            for basic blocks, a quarter of it for bottlenecks.

    A shortcut is the identity when shape allows, else a 1x1 conv + BatchNorm (option B).

    ``widths()`` is ``[stem_width, *stage_widths, *inner]`` with ``inner`` flattened (one entry
    per basic block, two per bottleneck). ``width_slots()`` maps every conv (stem, block convs,
    projection shortcuts) to its output width; ``fc`` is the output layer and has no slot.
    :meth:`with_widths` keeps a tied stem tied when the new stem and stage-1 widths are equal.

    >>> net = resnet20(width_mult=0.5)
    >>> tuple(net(torch.zeros(2, 3, 32, 32)).shape), net.widths()[:4]
    ((2, 10), [8, 8, 16, 32])
    >>> r = ResNet("bottleneck", [16, 32], [1, 1], inner_widths=[[4, 6], 8])
    >>> r.width_slots()["layer2.0.conv2"], r.widths()
    (8, [4, 16, 32, 4, 6, 8, 8])
    """

    def __init__(
        self,
        block: Block = "basic",
        stage_widths: Sequence[int] = (64, 128, 256, 512),
        blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
        in_channels: int = 3,
        num_classes: int = 10,
        stem: Stem = "cifar",
        stem_width: int | None = None,
        inner_widths: Sequence[int | Sequence[int]] | None = None,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        stage_widths = check_widths("stage_widths", stage_widths)
        blocks_per_stage = check_widths("blocks_per_stage", blocks_per_stage)
        if len(stage_widths) != len(blocks_per_stage):
            raise ValueError(
                f"stage_widths ({len(stage_widths)}) and blocks_per_stage "
                f"({len(blocks_per_stage)}) must have one entry per stage"
            )
        in_channels = check_positive("in_channels", in_channels)
        num_classes = check_positive("num_classes", num_classes)
        if stem_width is not None:
            stem_width = check_positive("stem_width", stem_width)
        stage_of_block = [s for s, n in enumerate(blocks_per_stage) for _ in range(n)]
        inner = self._resolve_inner(block, stage_widths, stage_of_block, inner_widths)
        self._set_config(
            block=block,
            stage_widths=stage_widths,
            blocks_per_stage=blocks_per_stage,
            in_channels=in_channels,
            num_classes=num_classes,
            stem=stem,
            stem_width=stem_width,
            inner_widths=None if inner_widths is None else inner,
        )
        self.stem_width = (
            self._default_stem(block, stage_widths) if stem_width is None else stem_width
        )
        self.inner = inner

        if stem == "cifar":
            self.conv1, self.bn1 = _conv_bn(in_channels, self.stem_width, 3)
            self.maxpool: nn.Module | None = None
        else:
            self.conv1, self.bn1 = _conv_bn(in_channels, self.stem_width, 7, 2)
            self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self.relu = nn.ReLU(inplace=True)
        c, i = self.stem_width, 0
        for s, (w, n) in enumerate(zip(stage_widths, blocks_per_stage)):
            blocks: list[nn.Module] = []
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                if block == "basic":
                    blocks.append(BasicBlock(c, inner[i], w, stride))
                else:
                    blocks.append(Bottleneck(c, inner[i][0], inner[i][1], w, stride))
                c, i = w, i + 1
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _default_stem(block: str, stage_widths: list[int]) -> int:
        return stage_widths[0] if block == "basic" else max(1, stage_widths[0] // 4)

    @staticmethod
    def _resolve_inner(
        block: str,
        stage_widths: list[int],
        stage_of_block: list[int],
        inner_widths: Sequence[int | Sequence[int]] | None,
    ) -> list:
        n = len(stage_of_block)
        if inner_widths is None:
            if block == "basic":
                return [stage_widths[s] for s in stage_of_block]
            return [[max(1, stage_widths[s] // 4)] * 2 for s in stage_of_block]
        inner = list(inner_widths)
        if len(inner) != n:
            raise ValueError(f"inner_widths needs one entry per block ({n}), got {len(inner)}")
        if block == "basic":
            return check_widths("inner_widths", inner)
        out = []
        for v in inner:
            pair = v if isinstance(v, Iterable) else [v, v]
            pair = check_widths("inner_widths entry", pair)
            if len(pair) != 2:
                raise ValueError(
                    f"a bottleneck's inner_widths entry is an int or [conv1, conv2], got {v!r}"
                )
            out.append(pair)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for s in range(len(self._config["stage_widths"])):
            x = getattr(self, f"layer{s + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))

    def widths(self) -> list[int]:
        flat = [w for v in self.inner for w in (v if isinstance(v, list) else [v])]
        return [self.stem_width, *self._config["stage_widths"], *flat]

    def width_slots(self) -> dict[str, int]:
        slots = {"conv1": self.stem_width}
        for name, module in self.named_modules():
            if isinstance(module, (BasicBlock, Bottleneck)):
                for conv in ("conv1", "conv2", "conv3"):
                    if hasattr(module, conv):
                        slots[f"{name}.{conv}"] = getattr(module, conv).out_channels
                if module.downsample is not None:
                    slots[f"{name}.downsample.0"] = module.downsample[0].out_channels
        return slots

    def width_layers(self) -> list[str]:
        last = "conv2" if self._config["block"] == "basic" else "conv3"
        n_stages = len(self._config["stage_widths"])
        names = ["conv1", *(f"layer{s + 1}.0.{last}" for s in range(n_stages))]
        for s, n in enumerate(self._config["blocks_per_stage"]):
            for b in range(n):
                p = f"layer{s + 1}.{b}"
                names += [f"{p}.conv1"] if last == "conv2" else [f"{p}.conv1", f"{p}.conv2"]
        return names

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        cfg = self.config()
        n_stages = len(cfg["stage_widths"])
        stem, stages, flat = widths[0], widths[1 : 1 + n_stages], widths[1 + n_stages :]
        cfg["stage_widths"] = stages
        if cfg["block"] == "basic":
            cfg["inner_widths"] = flat
        else:
            cfg["inner_widths"] = [flat[j : j + 2] for j in range(0, len(flat), 2)]
        # keep the default stem rule (and a tied stem) when the new widths still follow it
        tied = cfg["stem_width"] is None and stem == self._default_stem(cfg["block"], stages)
        cfg["stem_width"] = None if tied else stem
        return cfg


def resnet18(width_mult: float = 1.0, **kw: Any) -> ResNet:
    """ResNet-18 (basic blocks, 2-2-2-2, widths 64…512 times ``width_mult``), CIFAR stem."""
    widths = [scale_width(w, width_mult) for w in (64, 128, 256, 512)]
    return ResNet("basic", widths, [2, 2, 2, 2], **kw)


def resnet50(width_mult: float = 1.0, **kw: Any) -> ResNet:
    """ResNet-50 (bottlenecks, 3-4-6-3, stream widths 256…2048 times ``width_mult``).

    Inner widths default to a quarter of the stream width (64…512 at ``width_mult=1``) and the
    stem to 64, as in torchvision; ``stem`` defaults to ``"cifar"`` (pass ``"imagenet"``).
    """
    widths = [scale_width(w, width_mult) for w in (256, 512, 1024, 2048)]
    return ResNet("bottleneck", widths, [3, 4, 6, 3], **kw)


def resnet20(width_mult: float = 1.0, **kw: Any) -> ResNet:
    """CIFAR ResNet-20 (He et al. 2016): 3 stages x 3 basic blocks, widths 16/32/64.

    Shortcuts that change shape use 1x1 projections (option B), not zero padding (option A).
    """
    widths = [scale_width(w, width_mult) for w in (16, 32, 64)]
    return ResNet("basic", widths, [3, 3, 3], **kw)
