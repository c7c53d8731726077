"""CIFAR-style VGG with per-layer widths."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from widthwise.reproduction.zoo._base import (
    WidthConfigurable,
    check_positive,
    check_widths,
    scale_width,
)


def _parse(spec: str) -> list[int | str]:
    return [v if v == "M" else int(v) for v in spec.split()]


# Simonyan & Zisserman configurations A, B, D, E
CFGS: dict[str, list[int | str]] = {
    "vgg11": _parse("64 M 128 M 256 256 M 512 512 M 512 512 M"),
    "vgg13": _parse("64 64 M 128 128 M 256 256 M 512 512 M 512 512 M"),
    "vgg16": _parse("64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M"),
    "vgg19": _parse("64 64 M 128 128 M 256 256 256 256 M 512 512 512 512 M 512 512 512 512 M"),
}


class VGG(WidthConfigurable):
    """``conv3x3 → BN → ReLU`` per integer of ``cfg``, ``MaxPool2d(2)`` per ``"M"``, flatten, MLP.

    Args:
        cfg: per-layer conv widths with ``"M"`` for max pooling, e.g. ``[64, "M", 128, "M"]``.
        in_channels: image channels.
        num_classes: classifier outputs.
        batch_norm: BatchNorm2d after every conv.
        image_size: input height and width (the flatten size depends on it).
        classifier_widths: hidden widths of the classifier (CIFAR VGGs use none: one Linear).

    ``widths()`` is the conv widths in order, followed by ``classifier_widths``;
    ``width_slots()`` maps ``"features.i"`` / ``"classifier.j"`` module names to them.

    >>> net = VGG([8, "M", 16, "M"], image_size=8)
    >>> tuple(net(torch.zeros(2, 3, 8, 8)).shape), net.widths()
    ((2, 10), [8, 16])
    >>> vgg11(width_mult=0.25).widths()
    [16, 32, 64, 64, 128, 128, 128, 128]
    """

    def __init__(
        self,
        cfg: Sequence[int | str],
        in_channels: int = 3,
        num_classes: int = 10,
        batch_norm: bool = True,
        image_size: int = 32,
        classifier_widths: Sequence[int] = (),
    ) -> None:
        super().__init__()
        cfg = list(cfg)
        check_widths("cfg (without 'M')", [v for v in cfg if v != "M"])
        classifier_widths = check_widths("classifier_widths", classifier_widths, allow_empty=True)
        in_channels = check_positive("in_channels", in_channels)
        num_classes = check_positive("num_classes", num_classes)
        image_size = check_positive("image_size", image_size)
        n_pool = sum(v == "M" for v in cfg)
        if image_size % (2**n_pool):
            raise ValueError(
                f"image_size {image_size} is not divisible by 2**{n_pool} (one 2x2 max pool per "
                "'M' in cfg); use fewer 'M' entries or another image_size"
            )
        self._set_config(
            cfg=cfg,
            in_channels=in_channels,
            num_classes=num_classes,
            batch_norm=batch_norm,
            image_size=image_size,
            classifier_widths=classifier_widths,
        )
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers.append(nn.Conv2d(c, v, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
        self.features = nn.Sequential(*layers)
        side = image_size // 2**n_pool
        head: list[nn.Module] = []
        f = c * side * side
        for w in classifier_widths:
            head += [nn.Linear(f, w), nn.ReLU(inplace=True)]
            f = w
        head.append(nn.Linear(f, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))

    def widths(self) -> list[int]:
        return [v for v in self._config["cfg"] if v != "M"] + self._config["classifier_widths"]

    def width_slots(self) -> dict[str, int]:
        names = [
            f"{prefix}.{name}"
            for prefix, seq in (("features", self.features), ("classifier", self.classifier))
            for name, module in seq.named_children()
            if isinstance(module, (nn.Conv2d, nn.Linear))
        ]
        # the classifier's last Linear is the output layer, not a hidden width
        return dict(zip(names[:-1], self.widths()))

    def width_layers(self) -> list[str]:
        return list(self.width_slots())

    def _config_with_widths(self, widths: list[int]) -> dict[str, Any]:
        cfg = self.config()
        it = iter(widths)
        cfg["cfg"] = [v if v == "M" else next(it) for v in cfg["cfg"]]
        cfg["classifier_widths"] = list(it)
        return cfg


def _preset(name: str, width_mult: float, kw: dict[str, Any]) -> VGG:
    cfg = [v if v == "M" else scale_width(int(v), width_mult) for v in CFGS[name]]
    return VGG(cfg, **kw)


def vgg11(width_mult: float = 1.0, **kw: Any) -> VGG:
    """VGG-11 (configuration "A"), conv widths scaled by ``width_mult``."""
    return _preset("vgg11", width_mult, kw)


def vgg13(width_mult: float = 1.0, **kw: Any) -> VGG:
    """VGG-13 (configuration "B"), conv widths scaled by ``width_mult``."""
    return _preset("vgg13", width_mult, kw)


def vgg16(width_mult: float = 1.0, **kw: Any) -> VGG:
    """VGG-16 (configuration "D"), conv widths scaled by ``width_mult``."""
    return _preset("vgg16", width_mult, kw)


def vgg19(width_mult: float = 1.0, **kw: Any) -> VGG:
    """VGG-19 (configuration "E"), conv widths scaled by ``width_mult``."""
    return _preset("vgg19", width_mult, kw)
