"""A stand-in for torchvision, for ``bench_groups_timm.py`` only.

torchvision's wheel from the package registry is CUDA-linked and fails to import beside the CPU
torch this project pins; timm imports it at load time but its model code needs only
``FrozenBatchNorm2d`` (freezing helpers) and names from ``transforms`` (data pipelines, never
called by the battery). Everything else resolves to an inert placeholder.
"""

import enum
import sys
import types

import torch


class _Inert:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __getattr__(self, name):
        return _Inert()

    def __mro_entries__(self, bases):  # subclassing a placeholder gives a plain class
        return (object,)


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert()


class FrozenBatchNorm2d(torch.nn.Module):
    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.eps = eps


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


for _name in (
    "ops", "ops.misc", "transforms", "transforms.functional", "transforms.v2",
    "transforms.v2.functional", "models", "models.feature_extraction", "datasets", "io", "utils",
):  # fmt: skip
    _mod = _Module(f"torchvision.{_name}")
    _mod.__path__ = []
    sys.modules[_mod.__name__] = _mod
sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = FrozenBatchNorm2d
sys.modules["torchvision.transforms"].InterpolationMode = InterpolationMode
sys.modules["torchvision.transforms.functional"].InterpolationMode = InterpolationMode
sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]
__version__ = "0.0+stub"
