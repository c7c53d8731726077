"""Width-configurable reference models.

Every model takes its widths explicitly and follows one rebuild contract:

* ``model.config()`` returns the constructor arguments as a plain dict, and
  ``type(model).from_config(model.config())`` builds a fresh model of the same shape;
* ``model.widths()`` returns the configurable widths as a flat ``list[int]`` (its order is
  documented on each class) and ``model.with_widths(new)`` builds a fresh model with ``new``
  instead, everything else unchanged — what a streamlining plan needs;
* ``model.width_slots()`` maps the name of every hidden producing layer (conv, linear, GRU,
  attention projection; never the output layer) to its configured output width, which is how a
  :class:`~widthwise.groups.ChannelGroup` is matched to the configuration: a group's width equals
  the width of every slot among its producers;
* ``model.width_layers()`` names, for each entry of ``widths()``, the slot it sets, so new
  widths per layer (from a plan) become a ``with_widths`` list without guessing;
  ``model.config_with_widths(new)`` is the config such a rebuild would have.

Families: :class:`MLP`, :class:`CNN1D` (MNIST-1D), :class:`VGG` (``vgg11`` … ``vgg19``),
:class:`ResNet` (``resnet18``, ``resnet20``, ``resnet50``), :class:`ViT`, :class:`GRULM`,
:class:`VGG1D`, :class:`ResNet1D` and :class:`ViT1D` (conventional 1-D set-ups:
channels doubling per stage with BatchNorm, MLP ratio 4), :class:`GCN` (with :func:`normalize_adjacency`), :class:`UNet`, and :class:`ResidualMLP`, the
model of the width/depth kernel probe (constructor arguments only; it has no ``widths()``).

>>> from widthwise.reproduction.zoo import MLP
>>> net = MLP(10, [32, 16], 3)
>>> wider = MLP.from_config({**net.config(), "widths": [64, 16]})
>>> wider.widths() == net.with_widths([64, 16]).widths() == [64, 16]
True
>>> plan = {"hidden.1": 24}
>>> net.with_widths([plan.get(n, w) for n, w in zip(net.width_layers(), net.widths())]).widths()
[32, 24]
"""

from __future__ import annotations

from widthwise.probes.residual_mlp import ResidualMLP
from widthwise.reproduction.zoo._base import WidthConfigurable
from widthwise.reproduction.zoo.cnn1d import CNN1D
from widthwise.reproduction.zoo.conv1d_nets import VGG1D, ResNet1D
from widthwise.reproduction.zoo.gcn import GCN, normalize_adjacency
from widthwise.reproduction.zoo.gru import GRULM
from widthwise.reproduction.zoo.mlp import MLP
from widthwise.reproduction.zoo.resnet import ResNet, resnet18, resnet20, resnet50
from widthwise.reproduction.zoo.unet import UNet
from widthwise.reproduction.zoo.vgg import VGG, vgg11, vgg13, vgg16, vgg19
from widthwise.reproduction.zoo.vit import ViT
from widthwise.reproduction.zoo.vit1d import ViT1D

__all__ = [
    "CNN1D",
    "GCN",
    "GRULM",
    "MLP",
    "VGG",
    "VGG1D",
    "ResNet",
    "ResNet1D",
    "ResidualMLP",
    "UNet",
    "ViT",
    "ViT1D",
    "WidthConfigurable",
    "normalize_adjacency",
    "resnet18",
    "resnet20",
    "resnet50",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
]
