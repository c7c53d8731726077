"""Model surgery: give channel groups new widths.

One index map per group says, for every channel of the new model, which channel of the old model
it comes from. The same map is applied to every member of the group (producer rows, norm
parameters and their running statistics, consumer columns), so shrinking and widening are one
operation:

* shrinking keeps the highest-norm channels (norm as in :mod:`widthwise.norms`: the product over
  the group's weight tensors), in their original order;
* widening (``init="net2net"``) appends copies of the highest-norm channels and splits each copied
  channel's outgoing weights between the copies (Net2WiderNet, Chen et al. 2016). The split is
  random but sums to one, so the new model computes the same function while the copies receive
  different gradients and drift apart — equal halves would keep them identical forever;
* ``init="prune"`` shrinks like ``net2net`` and widens with fresh incoming weights and zero
  outgoing weights (again the same function);
* ``init="reinit"`` returns a freshly initialised model of the new shape, as the paper trains
  streamlined models from scratch.

Torch-Pruning, which finds the groups, has no widening and no recurrent layers, so widthwise does
the surgery itself: the index maps act on the :class:`~widthwise.groups.ChannelGroup` members, and
module attributes (``in_features``, ``num_features``, ``hidden_size``, ...) are then read back from
the new weight shapes. Function preservation is exact for linear consumers and per-channel norms
(BatchNorm); LayerNorm and GroupNorm over a widened group normalise over more channels, so there
it is approximate.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from widthwise.distributed import canonical_name
from widthwise.groups import ChannelGroup, Member
from widthwise.norms import channel_norms

Init = Literal["net2net", "prune", "reinit"]

__all__ = [
    "ResizeError",
    "channel_importance",
    "channel_map",
    "resize",
    "shrink_with_torch_pruning",
]


class ResizeError(RuntimeError):
    """The model could not be resized as planned; the message says which group and why."""


def channel_importance(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Per-channel norm (:func:`widthwise.norms.channel_norms`: the product of the channel's
    slice norms over weights with 2+ dims); non-finite norms count as 0."""
    norms = channel_norms(model, [group])[group.name]
    return torch.nan_to_num(torch.from_numpy(norms).double(), nan=0.0, posinf=0.0, neginf=0.0)


def channel_map(importance: torch.Tensor, new_width: int) -> torch.Tensor:
    """For each new channel, the old channel it comes from.

    Shrinking keeps the ``new_width`` most important channels in their original order; widening
    keeps every channel and appends copies of the most important ones, cycling if needed.

    >>> channel_map(torch.tensor([1.0, 3.0, 2.0]), 2).tolist()
    [1, 2]
    >>> channel_map(torch.tensor([1.0, 3.0, 2.0]), 5).tolist()
    [0, 1, 2, 1, 2]
    """
    old = len(importance)
    if new_width < 1:
        raise ResizeError(f"a group cannot be resized to {new_width} channels")
    ranked = torch.argsort(importance, descending=True, stable=True)
    if new_width <= old:
        return ranked[:new_width].sort().values
    extra = ranked.repeat((new_width - old) // old + 1)[: new_width - old]
    return torch.cat([torch.arange(old), extra])


def _split_ratios(mapping: torch.Tensor, old: int, generator: torch.Generator) -> torch.Tensor:
    # Every old channel's copies share its outgoing weight: random positive shares summing to 1.
    shares = torch.rand(len(mapping), generator=generator, dtype=torch.float64) + 0.5
    totals = torch.zeros(old, dtype=torch.float64).index_add_(0, mapping, shares)
    return shares / totals[mapping]


@dataclass
class _Edit:
    member: Member
    width: int
    mapping: torch.Tensor  # new channel -> old channel
    scale: torch.Tensor | None  # per new channel, for consumers when widening
    fresh: torch.Tensor | None  # per new channel: True where incoming weights are re-initialised


def _index_and_scale(size: int, edits: Sequence[_Edit]):
    """One index (and per-element scale/fresh masks) over a tensor dim for all edits on it."""
    edits = sorted(edits, key=lambda e: e.member.offset)
    index, scale, fresh = [], [], []
    cursor = 0
    for e in edits:
        m = e.member
        if m.offset < cursor:
            raise ResizeError(f"overlapping channel blocks in {m.param} (dim {m.dim})")
        keep = torch.arange(cursor, m.offset)
        index.append(keep)
        scale.append(torch.ones(len(keep), dtype=torch.float64))
        fresh.append(torch.zeros(len(keep), dtype=torch.bool))
        block = m.offset + e.mapping[:, None] * m.repeat + torch.arange(m.repeat)[None, :]
        index.append(block.reshape(-1))
        s = e.scale if e.scale is not None else torch.ones(len(e.mapping), dtype=torch.float64)
        scale.append(s.repeat_interleave(m.repeat))
        f = e.fresh if e.fresh is not None else torch.zeros(len(e.mapping), dtype=torch.bool)
        fresh.append(f.repeat_interleave(m.repeat))
        cursor = m.offset + e.width * m.repeat
    tail = torch.arange(cursor, size)
    index.append(tail)
    scale.append(torch.ones(len(tail), dtype=torch.float64))
    fresh.append(torch.zeros(len(tail), dtype=torch.bool))
    return torch.cat(index), torch.cat(scale), torch.cat(fresh)


def _owner(model: nn.Module, param: str) -> tuple[nn.Module, str]:
    module_name, _, attr = param.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def _apply_dim(model: nn.Module, param: str, dim: int, edits: Sequence[_Edit], gen) -> None:
    module, attr = _owner(model, param)
    p = getattr(module, attr)
    old_size = p.shape[dim]
    index, scale, fresh = _index_and_scale(old_size, edits)
    data = p.data.index_select(dim, index.to(p.device))
    shape = [1] * data.dim()
    shape[dim] = -1
    if any(e.scale is not None for e in edits):
        data = data * scale.to(device=p.device, dtype=data.dtype).reshape(shape)
    if fresh.any():
        mask = fresh.to(p.device).reshape(shape).expand_as(data)
        if data.dim() >= 2:
            bound = 1.0 / max(data[0].numel(), 1) ** 0.5  # nn.Linear/Conv default scale
            noise = (torch.rand(data.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            data = torch.where(mask, noise.to(device=p.device, dtype=data.dtype), data)
        else:
            data = torch.where(mask, torch.zeros_like(data), data)
    new = nn.Parameter(data.contiguous(), requires_grad=p.requires_grad)
    setattr(module, attr, new)
    if dim == 0:
        # Per-channel buffers (BatchNorm running statistics) follow the same map.
        for bname, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.dim() >= 1 and buf.shape[0] == old_size:
                module._buffers[bname] = buf.index_select(0, index.to(buf.device)).contiguous()


def _sync_attributes(model: nn.Module) -> None:
    """Read module attributes back from the (resized) weight shapes."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.modules.conv._ConvNd):
            w = module.weight
            if module.transposed:  # weight: [in, out / groups, *kernel]
                module.in_channels = w.shape[0]
                module.out_channels = w.shape[1] * module.groups
            elif module.groups > 1 and w.shape[1] == 1 and module.groups == module.in_channels:
                module.groups = module.in_channels = module.out_channels = w.shape[0]  # depthwise
            else:  # weight: [out, in / groups, *kernel]
                module.out_channels = w.shape[0]
                module.in_channels = w.shape[1] * module.groups
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            if module.weight is not None:
                module.num_features = module.weight.shape[0]
            elif module.running_mean is not None:
                module.num_features = module.running_mean.shape[0]
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            module.normalized_shape = tuple(module.weight.shape)
        elif isinstance(module, nn.GroupNorm) and module.weight is not None:
            module.num_channels = module.weight.shape[0]
            if module.num_channels % module.num_groups:
                raise ResizeError(
                    f"GroupNorm with {module.num_groups} groups cannot take "
                    f"{module.num_channels} channels"
                )
        elif isinstance(module, nn.Embedding):
            module.num_embeddings, module.embedding_dim = module.weight.shape
        elif isinstance(module, nn.MultiheadAttention):
            module.embed_dim = module.out_proj.weight.shape[0]
            if module.in_proj_weight is not None:
                module.kdim = module.vdim = module.in_proj_weight.shape[1]
            module.head_dim = module.embed_dim // module.num_heads
            if module.head_dim * module.num_heads != module.embed_dim:
                raise ResizeError(
                    f"attention with {module.num_heads} heads cannot take "
                    f"{module.embed_dim} channels"
                )
        elif isinstance(module, nn.RNNBase):
            module.hidden_size = module.weight_hh_l0.shape[1]
            module.input_size = module.weight_ih_l0.shape[1]
            module._init_flat_weights()  # the cached list still points at the old tensors


def resize(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    widths: Mapping[str, int],
    *,
    init: Init = "net2net",
    seed: int = 0,
) -> nn.Module:
    """A new model whose groups have the given widths; ``model`` is left unchanged.

    ``widths`` maps group names to new widths; groups not named keep theirs.

    >>> import torch
    >>> from widthwise.groups import ChannelGroup, Member
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> g = ChannelGroup("0", 4, (Member("0.weight", 0, "producer"), Member("0.bias", 0, "other"),
    ...                           Member("2.weight", 1, "consumer")))
    >>> wide = resize(net, [g], {"0": 7})
    >>> wide[0].out_features, wide[2].in_features
    (7, 7)
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(wide(x), net(x), atol=1e-6)
    True
    """
    if init not in ("net2net", "prune", "reinit"):
        raise ValueError(f"init must be 'net2net', 'prune' or 'reinit', got {init!r}")
    by_name = {g.name: g for g in groups}
    unknown = sorted(set(widths) - set(by_name))
    if unknown:
        raise ResizeError(f"no channel group named {unknown[0]!r}; known: {sorted(by_name)}")
    shapes = {canonical_name(n): p.shape for n, p in model.named_parameters()}
    for g in groups:  # groups found on another model would fail deep inside the surgery
        for m in g.members:
            if m.param in shapes and shapes[m.param][m.dim] < m.offset + g.width * m.repeat:
                raise ResizeError(
                    f"group {g.name!r} does not fit this model: {m.param} has "
                    f"{shapes[m.param][m.dim]} channels in dim {m.dim}, the group needs "
                    f"{m.offset + g.width * m.repeat} (were the groups found on another model?)"
                )
    new = copy.deepcopy(model)
    params = set(shapes)
    gen = torch.Generator().manual_seed(seed)
    edits: dict[tuple[str, int], list[_Edit]] = defaultdict(list)
    for name, width in widths.items():
        g = by_name[name]
        width = int(width)
        if width == g.width:
            continue
        if width % max(g.divisor, 1):
            raise ResizeError(f"group {name!r} needs a multiple of {g.divisor}, got {width}")
        missing = [m.param for m in g.members if m.param not in params]
        if missing:
            raise ResizeError(f"group {name!r} names parameters the model lacks: {missing[:3]}")
        # reinit resets every weight, so which old channel a new one comes from does not matter:
        # skip the norms (the budget search resizes this way once per trial)
        importance = torch.zeros(g.width) if init == "reinit" else channel_importance(model, g)
        mapping = channel_map(importance, width)
        widening = width > g.width
        ratios = _split_ratios(mapping, g.width, gen) if widening else None
        fresh = None
        if widening and init == "prune":
            fresh = torch.arange(width) >= g.width
        for m in g.members:
            scale = None
            if m.role == "consumer" and widening:
                scale = ratios if init != "prune" else (~fresh).double()
            edits[(m.param, m.dim)].append(
                _Edit(m, g.width, mapping, scale, fresh if m.role != "consumer" else None)
            )
    for (param, dim), es in edits.items():
        _apply_dim(new, _strip_to(new, param), dim, es, gen)
    _sync_attributes(new)
    if init == "reinit":
        for module in new.modules():
            if hasattr(module, "reset_parameters") and module is not new:
                module.reset_parameters()
    return new


def _strip_to(model: nn.Module, param: str) -> str:
    # Groups use plain names; a wrapped model's parameters carry a prefix.
    for name, _ in model.named_parameters():
        if canonical_name(name) == param:
            return name
    raise ResizeError(f"parameter {param!r} not found in the model")


def _tp_producer(model: nn.Module, group: ChannelGroup) -> str | None:
    """The name of the Linear/Conv whose output channels are the group's, if Torch-Pruning can
    cut it."""
    if group.kind in ("recurrent", "attention") or any(m.gate for m in group.members):
        return None
    for m in group.producers:
        if m.offset or m.repeat != 1 or not m.param.endswith(".weight"):
            continue
        try:
            module = model.get_submodule(m.param.rpartition(".")[0])
        except AttributeError:
            continue
        if not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
            continue
        if m.dim == (1 if getattr(module, "transposed", False) else 0):  # its output channels
            return m.param.rpartition(".")[0]
    return None


def shrink_with_torch_pruning(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    widths: Mapping[str, int],
    example_inputs: object,
) -> tuple[nn.Module, set[str]]:
    """Narrow groups with Torch-Pruning, keeping each group's highest-norm channels.

    Returns ``(new_model, done)``: a copy of ``model`` in which every group named in ``done`` has
    its new width; the others (wider, unchanged, or not cuttable by Torch-Pruning: recurrent and
    attention-internal groups, models with GRU/LSTM or ``nn.MultiheadAttention``) are left to
    :func:`resize`. Which channels go is decided on ``model`` before any cut (the same choice as
    :func:`resize`), and the dependency graph is rebuilt after every cut, because Torch-Pruning
    caches concat offsets that a cut makes stale.
    """
    import torch_pruning as tp

    from widthwise.groups import _call_model

    new = copy.deepcopy(model)
    if any(isinstance(m, nn.RNNBase | nn.MultiheadAttention) for m in new.modules()):
        return new, set()
    by_name = {g.name: g for g in groups}
    cuts = []
    for name, width in widths.items():
        g = by_name[name]
        if int(width) >= g.width:
            continue
        module_name = _tp_producer(model, g)
        if module_name is None:
            continue
        keep = channel_map(channel_importance(model, g), int(width))
        drop = sorted(set(range(g.width)) - set(keep.tolist()))
        cuts.append((name, module_name, drop))
    done: set[str] = set()
    was_training = new.training
    new.eval()
    for name, module_name, drop in cuts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Torch-Pruning's notes on unwrapped parameters
            graph = tp.DependencyGraph().build_dependency(
                new,
                example_inputs=example_inputs,
                forward_fn=_call_model,
                verbose=False,
            )
            module = new.get_submodule(module_name)
            pruner = graph.get_pruner_of_module(module)
            cut = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=drop)
            cut.prune()
        del graph, cut
        done.add(name)
    new.train(was_training)
    return new, done
