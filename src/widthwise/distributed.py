"""What widthwise needs to know about DDP, FSDP2 and ``torch.compile`` wrappers.

Wrappers prefix parameter names (``module.``, ``_orig_mod.``, ``_fsdp_wrapped_module.``); channel
groups always use the plain model's names, so a run recorded under DDP reads exactly like one
recorded on a single process.

FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps every parameter as a ``DTensor`` sharded
along one dimension. :func:`local_shard` says which block of the full tensor this rank holds, so
:mod:`widthwise.norms` can compute per-channel partial sums of squares locally and add them up
across ranks with a single ``all_reduce``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

__all__ = [
    "LocalShard",
    "canonical_name",
    "has_sharded_parameters",
    "is_writer",
    "local_shard",
    "plain_copy",
    "unwrap",
]

_WRAPPER_PARTS = ("module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")


def canonical_name(name: str) -> str:
    """A parameter name as the unwrapped model spells it.

    >>> canonical_name("module._orig_mod.layer1.0.conv1.weight")
    'layer1.0.conv1.weight'
    >>> canonical_name("encoder.module.weight")  # only leading ``module.`` is a DDP prefix
    'encoder.module.weight'
    """
    parts = name.split(".")
    while parts and parts[0] == "module":
        parts.pop(0)
    return ".".join(p for p in parts if p not in _WRAPPER_PARTS[1:])


def unwrap(model: nn.Module) -> nn.Module:
    """The user's model inside DDP / DataParallel / ``torch.compile`` wrappers.

    FSDP2 modules are their own model (the parameters are sharded in place) and come back as is.
    """
    seen = 0
    while seen < 16:
        seen += 1
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel) or type(
            model
        ).__name__ in ("FullyShardedDataParallel",):
            inner = getattr(model, "module", None) or getattr(model, "_fsdp_wrapped_module", None)
            if not isinstance(inner, nn.Module):
                break
            model = inner
        else:
            break
    return model


def is_writer() -> bool:
    """True on the process that writes run files: rank 0, or the only process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return True
    return dist.get_rank() == 0


@dataclass(frozen=True)
class LocalShard:
    """The block of a parameter that this rank holds.

    Attributes:
        tensor: the local data (a plain tensor).
        offsets: global index of the local block's first element along every dimension.
        group: the process group whose ranks hold the other blocks, or ``None`` if the tensor
            is complete on every rank (plain tensor, replicated ``DTensor``).
    """

    tensor: torch.Tensor
    offsets: tuple[int, ...]
    group: object | None


def local_shard(param: torch.Tensor) -> LocalShard:
    """Split a parameter into its local block and where that block sits.

    Plain tensors are complete; ``DTensor`` parameters sharded along any dimensions of a mesh
    (FSDP2: ``Shard(0)`` on a 1-D mesh) give the local block and its global offsets. Partial
    placements are materialised with ``full_tensor()`` (a collective every rank joins).
    """
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return LocalShard(param.detach(), (0,) * param.ndim, None)
    if not isinstance(param, DTensor):
        return LocalShard(param.detach(), (0,) * param.ndim, None)
    from torch.distributed.tensor.placement_types import Replicate, Shard

    placements = tuple(param.placements)
    if all(isinstance(p, Replicate) for p in placements):
        return LocalShard(param.to_local().detach(), (0,) * param.ndim, None)
    if not all(isinstance(p, Shard | Replicate) for p in placements) or param.device_mesh.ndim != 1:
        return LocalShard(param.full_tensor().detach(), (0,) * param.ndim, None)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offsets = compute_local_shape_and_global_offset(param.shape, param.device_mesh, placements)
    return LocalShard(param.to_local().detach(), tuple(offsets), param.device_mesh.get_group())


def _dtensor_type() -> type[DTensor] | tuple[()]:
    """``DTensor`` for ``isinstance``; where torch has no distributed support, ``()``, which
    nothing is an instance of."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return ()
    return DTensor


def has_sharded_parameters(model: nn.Module) -> bool:
    """True if any parameter is a ``DTensor`` (FSDP2, tensor parallel)."""
    dt = _dtensor_type()
    return any(isinstance(p, dt) for p in model.parameters())


def plain_copy(model: nn.Module) -> nn.Module:
    """An ordinary module with the full weights of an FSDP2-sharded one, for finding its groups.

    FSDP2 refuses ``deepcopy``, so the module tree is rebuilt: each module becomes an instance of
    its original class sharing the non-tensor attributes, without FSDP's hooks, with every
    ``DTensor`` gathered into a plain parameter. Every rank must call this (it all-gathers). The
    copy holds the whole model on each rank, so it is only for models that fit in memory once.
    """
    dt = _dtensor_type()
    tensors: dict[int, torch.Tensor] = {}

    def full(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in tensors:
            data = t.full_tensor() if isinstance(t, dt) else t
            tensors[id(t)] = (
                nn.Parameter(data.detach().clone(), t.requires_grad)
                if isinstance(t, nn.Parameter)
                else data.detach().clone()
            )
        return tensors[id(t)]

    def full_parameter(p: nn.Parameter) -> nn.Parameter:
        t = full(p)
        assert isinstance(t, nn.Parameter)  # full() keeps a Parameter a Parameter
        return t

    modules: dict[int, nn.Module] = {}

    def rebuild(mod: nn.Module) -> nn.Module:
        if id(mod) in modules:
            return modules[id(mod)]
        cls = type(mod)
        if any(b.__name__ == "FSDPModule" for b in cls.__mro__):
            cls = next(
                b
                for b in cls.__mro__[1:]
                if issubclass(b, nn.Module)
                and not any(c.__name__ == "FSDPModule" for c in b.__mro__)
            )
        new = object.__new__(cls)
        new.__dict__ = dict(mod.__dict__)
        for key in mod.__dict__:
            if key.endswith("hooks") or key.endswith("hooks_with_kwargs"):
                new.__dict__[key] = OrderedDict()
        new.__dict__["_forward_hooks_always_called"] = OrderedDict()
        new._parameters = {
            k: None if v is None else full_parameter(v) for k, v in mod._parameters.items()
        }
        new._buffers = {k: None if v is None else full(v) for k, v in mod._buffers.items()}
        modules[id(mod)] = new
        new._modules = {k: None if v is None else rebuild(v) for k, v in mod._modules.items()}
        return new

    return rebuild(model)
