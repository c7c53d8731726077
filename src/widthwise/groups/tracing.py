"""Glue between a model's trace and Torch-Pruning's dependency graph, used by the finder.

Contract: nothing here changes the model for longer than one trace. It holds the index-map
repairs (maps that cannot be inferred are skipped; ``split``/``chunk`` pieces are mapped by the
autograd edge they are read through), the Hugging Face ``Conv1D`` pruner, the routing of
``F.linear`` on raw parameters through stand-in modules, and the helpers that turn a
Torch-Pruning index list into ``(offset, repeat)`` layouts.
"""

from __future__ import annotations

import contextlib
import functools
import math
import weakref
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.autograd.graph import Node as GradFn

if TYPE_CHECKING:
    from typing_extensions import TypeIs

# Torch-Pruning 1.6 ships no type information, so everything it returns is ``Any`` to a type
# checker. These Protocols write down the small part of its dependency graph that the finder
# reads (attributes of ``torch_pruning.dependency`` ``Node``, ``Dependency`` and
# ``DependencyGraph``), so that code is checked against one stated surface instead of ``Any``.

#: an index map: Torch-Pruning's ``_HybridIndex`` list in, the mapped list out
IndexMap = Callable[[list[Any]], list[Any]]
#: a pruning function (``prune_out_channels`` / ``prune_in_channels``), compared by identity
PruningFn = Callable[..., Any]


class TPNode(Protocol):
    """A node of Torch-Pruning's graph: one layer, parameter or traced op."""

    # an nn.Module of the model, an nn.Parameter (PARAMETER nodes) or Torch-Pruning's stand-in
    # module for a parameter-free op; the op type (``type``) says which
    module: Any
    grad_fn: GradFn | None
    type: Any  # torch_pruning.ops.OPTYPE (an Enum)
    pruning_dim: int
    enable_index_mapping: bool  # concat/split nodes: whether their index maps are used
    inputs: list[TPNode]
    outputs: list[TPNode]
    dependencies: list[TPDependency]


class TPDependency(Protocol):
    """An edge: pruning ``source`` with ``trigger`` requires pruning ``target`` with ``handler``."""

    source: TPNode
    target: TPNode
    handler: PruningFn
    index_mapping: list[IndexMap | None]

    def is_triggered_by(self, pruning_fn: PruningFn) -> bool: ...


class TPPruner(Protocol):
    """A Torch-Pruning layer pruner (``BasePruningFunc``), as far as the finder calls it."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module: ...

    def get_out_channels(self, layer: nn.Module) -> int: ...


class TPGraph(Protocol):
    """``torch_pruning.DependencyGraph`` after ``build_dependency``."""

    module2node: dict[Any, TPNode]  # keys: modules and parameters, as ``TPNode.module``
    unwrapped_parameters: list[tuple[nn.Parameter, int]]
    ignored_params: list[nn.Parameter]

    def get_pruner_of_module(self, module: nn.Module) -> TPPruner: ...

    def is_out_channel_pruning_fn(self, fn: PruningFn) -> bool: ...


if TYPE_CHECKING:

    class HFConv1D(nn.Module):
        """Hugging Face's ``Conv1D`` (GPT-2 family) as the type checker sees it: at run time it
        is recognised by :func:`_is_conv1d` (name and shape), so transformers is not imported."""

        nf: int
        weight: nn.Parameter
        bias: nn.Parameter | None

    #: a layer whose weight rows compute channels and whose columns read them
    WeightLayer = nn.Linear | nn.modules.conv._ConvNd | HFConv1D


def _update_index_mapping(dg: TPGraph) -> None:
    """Torch-Pruning's ``update_index_mapping``, one node at a time: a node whose channel count
    cannot be inferred (a cache ``torch.cat`` in Hugging Face attention) keeps no mapping
    instead of failing the whole trace; the permutation check catches what that misses."""
    import torch_pruning as tp

    im, t = tp.dependency.index_mapping, tp.ops.OPTYPE
    update = {
        t.CONCAT: _concat_index_mapping,
        t.SPLIT: _split_index_mapping,
        t.RESHAPE: _reshape_index_mapping,
        t.UNBIND: im.update_unbind_index_mapping,
        t.EXPAND: _expand_index_mapping,
        t.SLICE: _slice_index_mapping,
    }
    nodes = list(dg.module2node.values())
    _cut_contractions(dg, nodes)
    for node in nodes:
        if node.type == t.CONCAT and _feature_cat_2d(node.grad_fn):
            # Torch-Pruning turns off the map of every concat below a 3-D parameter (a ViT's
            # class token, concatenated along tokens); a 2-D concat on features (DINOv2's head
            # reads cat([cls, mean of patches])) is not that case
            node.enable_index_mapping = True
    for node in nodes:
        if node.type == t.CONCAT:
            with contextlib.suppress(Exception):
                _features_last_cat(node, dg)
    # splits first: a concat of split pieces reads the piece sizes they set
    for node in sorted(nodes, key=lambda n: n.type != t.SPLIT):
        fn = update.get(node.type)
        if fn is not None:
            with contextlib.suppress(Exception):
                fn(dg, node)
    _cat_before_split(nodes)


def _cat_before_split(nodes: list[TPNode]) -> None:
    """On the edge from a ``torch.cat`` back to the ``split`` whose piece it reads (SHViT:
    ``cat([f(x1), x2])`` of ``x1, x2 = split(x)``), map cat -> piece before piece -> split.
    Torch-Pruning keeps the split's map in slot 0 and the concat's in slot 1 and applies them
    in that order, which is right from the split to the cat only: the other way it shifts the
    indices into the split's input before asking which piece of the cat they are in."""
    import torch_pruning as tp

    im = tp.dependency.index_mapping
    for node in nodes:
        if node.type != tp.ops.OPTYPE.CONCAT:
            continue
        for dep in node.dependencies:
            first, second = dep.index_mapping[0], dep.index_mapping[1]
            if isinstance(first, im._SplitIndexMapping) and isinstance(
                second, im._ConcatIndexMapping
            ):
                dep.index_mapping[0], dep.index_mapping[1] = second, first


def _along_tokens(node: TPNode, dg: TPGraph) -> bool:
    """A concat or split along dim 1 of ``B, T, C`` tensors that hold channels last: along the
    tokens (CvT's class token split off and put back around its conv projections), so each
    piece keeps every channel where it is. Torch-Pruning maps dim 1 as channels."""
    gf = node.grad_fn
    meta = getattr(gf, "_input_metadata", None)
    dim = getattr(gf, "_saved_dim", None)
    if gf is None or not meta or dim is None:
        return False
    dim = _signed(dim)
    if len(meta[0].shape) != 3 or dim not in (1, -2):
        return False
    found = _dims(dg)
    return any(_channels_last(f, found) for f, _ in gf.next_functions if f is not None)


def _concat_index_mapping(dg: TPGraph, node: TPNode) -> None:
    """Torch-Pruning's concat maps, except along tokens (:func:`_along_tokens`) and along any
    dim but 1 (a concat on the last dim is mapped by :func:`_features_last_cat` or not at all).
    Torch-Pruning means to map dim 1 only, but autograd saves ``dim=-1`` as a huge unsigned
    int that passes its test: the rotary ``cat((-x2, x1), dim=-1)`` of a key narrower than
    the query was mapped as two key-wide pieces, and every lap of the walk through it shifted
    the indices by one more key width (eager Llama-like attention: the walks did not end)."""
    import torch_pruning as tp

    gf = node.grad_fn
    meta = getattr(gf, "_input_metadata", None)
    dim = getattr(gf, "_saved_dim", None)
    if (
        meta
        and dim is not None
        and len(meta[0].shape) >= 3
        and _signed(dim) % len(meta[0].shape) != 1
    ):
        return
    if not _along_tokens(node, dg) and not _map_conv_concat(node):
        tp.dependency.index_mapping.update_concat_index_mapping(dg, node)


def _map_conv_concat(node: TPNode) -> bool:
    """Index maps of a ``torch.cat`` on dim 1 of ``N, C, H, W`` maps, with each piece's size
    read from the autograd graph. Torch-Pruning infers the sizes by walking the graph for a
    layer, and keeps no map when one piece comes from an op it cannot size (SHViT's
    ``cat([attention output, untouched channels])``): the walk then carries the untouched
    channels into the attention. False if the pieces cannot be told apart."""

    gf = node.grad_fn
    meta = getattr(gf, "_input_metadata", None)
    dim = getattr(gf, "_saved_dim", None)
    if gf is None or not meta or dim is None or len(meta[0].shape) not in (4, 5):
        return False
    dim = _signed(dim)
    if dim % len(meta[0].shape) != 1:
        return False
    edges = [(f, nr) for f, nr in gf.next_functions if f is not None]
    if [n.grad_fn for n in node.inputs] != [f for f, _ in edges]:
        return False  # a piece read twice, or an input that is not traced
    offsets = [0]
    for f, nr in edges:
        offsets.append(offsets[-1] + int(f._input_metadata[nr].shape[1]))
    node.module.concat_sizes = [int(f._input_metadata[nr].shape[1]) for f, nr in edges]
    node.module.offsets = offsets
    # mapped even where Torch-Pruning turned the map off: it does so for every concat below a
    # 3-D parameter (meant for a class token concatenated along tokens), which on channel maps
    # drops the pieces' offsets (EdgeNeXt's split blocks beside XCA's ``temperature``)
    node.enable_index_mapping = True
    _set_concat_maps(node, offsets)
    return True


def _set_concat_maps(node: TPNode, offsets: list[int]) -> None:
    """Torch-Pruning's concat index maps on both edges between ``node`` and each input, piece
    ``i`` spanning ``offsets[i]:offsets[i + 1]``."""
    import torch_pruning as tp

    cat_map = tp.dependency.index_mapping._ConcatIndexMapping
    for i, in_node in enumerate(node.inputs):
        piece = offsets[i : i + 2]
        for dep in node.dependencies:
            if dep.target is in_node:
                dep.index_mapping[1] = cat_map(offset=piece, reverse=True)
        for dep in in_node.dependencies:
            if dep.target is node:
                dep.index_mapping[1] = cat_map(offset=piece, reverse=False)


def _feature_cat_2d(gf: GradFn | None) -> bool:
    """A ``torch.cat`` along dim 1 of 2-D tensors (batch, features)."""
    meta = getattr(gf, "_input_metadata", None)
    dim = getattr(gf, "_saved_dim", None)
    if not meta or dim is None:
        return False
    return len(meta[0].shape) == 2 and dim in (1, -1)


def _read_by_features_layer(node: TPNode, optype: Any, depth: int = 4) -> bool:
    """A Linear or LayerNorm reads ``node`` through at most ``depth`` parameter-free ops
    (the view/addmm/transpose a Linear on 3-D input records)."""
    frontier = list(node.outputs)
    for _ in range(depth):
        if any(isinstance(n.module, (nn.Linear, nn.LayerNorm)) for n in frontier):
            return True
        frontier = [
            o
            for n in frontier
            if n.type == optype.ELEMENTWISE or n.type == optype.RESHAPE
            for o in n.outputs
        ]
    return False


def _features_last_cat(node: TPNode, dg: TPGraph) -> None:
    """Index maps of a ``torch.cat`` along the last dim of (batch, tokens, features) tensors
    read by a Linear or LayerNorm (MobileBERT's trigram embedding: the embeddings shifted by
    one token either way, concatenated on features). Torch-Pruning maps concats on dim 1
    only; the piece sizes come from the autograd metadata."""
    import torch_pruning as tp

    gf = node.grad_fn
    meta = getattr(gf, "_input_metadata", None)
    dim = getattr(gf, "_saved_dim", None)
    if gf is None or not meta or dim is None:
        return
    nd = len(meta[0].shape)
    dim = _signed(dim)  # autograd saves cat(dim=-1) as an unsigned int
    if nd < 3 or dim not in (nd - 1, -1):
        return
    if not _read_by_features_layer(node, tp.ops.OPTYPE) and not _pieces_channels_last(node, dg):
        return  # (batch, channels, time) cat on time for a conv: not features
    edges = [(f, nr) for f, nr in gf.next_functions if f is not None]
    if [n.grad_fn for n in node.inputs] != [f for f, _ in edges]:
        return  # cannot tell which input is which piece
    offsets = [0]
    for f, nr in edges:
        offsets.append(offsets[-1] + int(f._input_metadata[nr].shape[-1]))
    _set_concat_maps(node, offsets)


def _pieces_channels_last(node: TPNode, dg: TPGraph) -> bool:
    """Every piece a concat reads holds a whole set of channels, last (Swin-V2's patch merging:
    the 2x2 neighbours of a ``B, H, W, C`` map concatenated on C, read by the reduction first).
    Pieces cut from one tensor's channels and put back together (a rotary embedding's halves,
    ``cat([a*cos - b*sin, a*sin + b*cos], -1)`` of ``x[..., 0::2]`` and ``x[..., 1::2]``) are a
    rearrangement of those channels, not a concat of channel sets: on DeepSeek's rotary key,
    shared by all heads, such a map let the walks from the heads carry head indices into the
    compressed key/value projection."""
    found = _dims(dg)
    gf = node.grad_fn
    parents = [f for f, _ in getattr(gf, "next_functions", ()) if f is not None]
    return bool(parents) and all(
        _channels_last(f, found) and not _cut_from_channels(f, found) for f in parents
    )


def _has_own_params(mod: nn.Module) -> bool:
    return next(mod.parameters(recurse=False), None) is not None


#: autograd nodes that take part of a tensor along one dim (``_saved_dim``)
_CUTTING = ("slicebackward", "splitbackward", "splitwithsizesbackward", "narrowbackward")


def _cut_from_channels(gf: GradFn, dims: _Dims, depth: int = 8) -> bool:
    """The tensor ``gf`` computes is made, through element-wise ops (same number of dims), from
    part of another tensor's last dim: a slice or split that drops some of its channels."""
    todo, seen = [(gf, depth)], set()
    while todo:
        f, left = todo.pop()
        mod = dims.layers.get(f)
        if f in seen or (isinstance(mod, nn.Module) and _has_own_params(mod)):
            continue  # a layer makes its channels whole
        seen.add(f)
        nd = _ndim(f)
        dim = getattr(f, "_saved_dim", None)
        if f.name().lower().startswith(_CUTTING) and nd and isinstance(dim, int):
            dim = _signed(dim) % nd
            before = [int(x) for x in getattr(f, "_saved_self_sym_sizes", ())]
            after = int(getattr(f, "_input_metadata")[0].shape[dim])  # noqa: B009
            if dim == nd - 1 and (not before or before[dim] != after):
                return True
        if left:
            todo += [(p, left - 1) for p, _ in f.next_functions if p is not None and _ndim(p) == nd]
    return False


def _split_index_mapping(dg: TPGraph, node: TPNode) -> None:
    """Index maps of a ``torch.split``/``chunk`` on channels, each reader mapped to the piece it
    actually reads (the autograd edge's output number). Torch-Pruning assumes its readers come
    in piece order and infers ``chunk`` sizes from the graph, which goes wrong in CSP and
    Res2Net blocks."""
    import torch_pruning as tp

    gf = node.grad_fn
    shape = getattr(gf, "_saved_self_sym_sizes", None)
    dim = getattr(gf, "_saved_dim", None)
    if shape is None or dim is None:
        return tp.dependency.index_mapping.update_split_index_mapping(dg, node)
    if _along_tokens(node, dg):
        return None
    dim = dim + len(shape) if dim < 0 else dim
    last = _signed(dim) % len(shape)  # a negative dim reads as an unsigned int here
    if dim != 1 and not _split_channels_last(node, dg, last, len(shape)):
        return None  # not the channel dimension: no index map
    dim = last
    total = int(shape[dim])
    sizes = getattr(gf, "_saved_split_sizes", None)
    if sizes is None:
        step = int(getattr(gf, "_saved_split_size"))  # noqa: B009 - not in torch's stubs
        sizes = [min(step, total - a) for a in range(0, total, step)]
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + int(n))
    piece = {}
    for out in node.outputs:
        nrs = {nr for f, nr in getattr(out.grad_fn, "next_functions", ()) if f is gf}
        if len(nrs) != 1:
            return None  # a reader of several pieces: leave it to the permutation check
        piece[out] = nrs.pop()
    node.module.split_sizes, node.module.offsets = list(sizes), offsets
    Map = tp.dependency.index_mapping._SplitIndexMapping
    for out, i in piece.items():
        for dep in node.dependencies:
            if dep.target is out:
                dep.index_mapping[0] = Map(offset=offsets[i : i + 2], reverse=False)
        for dep in out.dependencies:
            if dep.target is node:
                dep.index_mapping[0] = Map(offset=offsets[i : i + 2], reverse=True)
    return None


def _split_channels_last(node: TPNode, dg: TPGraph, dim: int, nd: int) -> bool:
    """A split along the last dim of a tensor of 3+ dims that holds its channels last, whose
    pieces are concatenated back on the last dim (MambaOut's ``g, i, c = split(fc1(x), sizes,
    dim=-1)``, ``g * cat((i, conv(c)), -1)``). Left without a map, it passed indices through
    unchanged while that concat (:func:`_features_last_cat`) shifted them, so every lap of the
    walk found new ones. Other last-dim splits (GPT-2's fused ``[q | k | v]``) keep no map:
    their attention is grouped from the projections' candidates."""
    import torch_pruning as tp

    parents = [f for f, _ in getattr(node.grad_fn, "next_functions", ()) if f is not None]
    if nd < 3 or dim != nd - 1 or not parents or not _channels_last(parents[0], _dims(dg)):
        return False
    return any(
        out.type == tp.ops.OPTYPE.CONCAT
        and _signed(getattr(out.grad_fn, "_saved_dim", 0)) in (-1, nd - 1)
        for out in node.outputs
    )


class _RouteLinear(torch.overrides.TorchFunctionMode):
    """Routes ``F.linear`` on known (weight, bias) pairs through stand-in modules, or (with
    ``raw``) records the pairs of raw parameters it is called with. ``F.linear(x, m.weight, b)``
    on the weight of a bias-less Linear ``m`` with a computed bias (BEiT's, Eva's and Swin-V2's
    ``cat(q_bias, k_bias, v_bias)``) is traced as ``m(x) + b``: the same values, with ``m`` a
    layer Torch-Pruning sees."""

    def __init__(
        self,
        shadows: dict[tuple[int, int], nn.Linear],
        raw: dict[int, nn.Parameter] | None = None,
        unbiased: dict[int, nn.Linear] | None = None,
    ):
        super().__init__()
        self.shadows, self.raw = shadows, raw
        self.unbiased = unbiased or {}
        self.seen: list[tuple[nn.Parameter, nn.Parameter]] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Iterable[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            x = args[0] if args else kwargs.get("input")
            w = args[1] if len(args) > 1 else kwargs.get("weight")
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            if self.raw is not None:
                pw, pb = self.raw.get(id(w)), self.raw.get(id(b))  # w and b when they are raw
                if pw is not None and pb is not None and pw.ndim == 2:
                    self.seen.append((pw, pb))
            elif (id(w), id(b)) in self.shadows:
                return self.shadows[(id(w), id(b))](x)
            elif b is not None and id(w) in self.unbiased:
                return self.unbiased[id(w)](x) + b.detach()
        return func(*args, **kwargs)


@contextlib.contextmanager
def _tolerant_index_mapping() -> Iterator[None]:
    """Use :func:`_update_index_mapping` inside ``build_dependency`` for the block."""
    from torch_pruning.dependency import graph

    before = graph.index_mapping
    shim = type("index_mapping", (), {"update_index_mapping": staticmethod(_update_index_mapping)})
    graph.index_mapping = shim
    try:
        yield
    finally:
        graph.index_mapping = before


@contextlib.contextmanager
def _no_new_hooks(model: nn.Module) -> Iterator[None]:
    """Remove forward hooks added inside the block (Torch-Pruning leaves its own behind when the
    forward raises)."""
    before = {m: set(m._forward_hooks) for m in model.modules()}
    try:
        yield
    finally:
        for m, keys in before.items():
            for k in set(m._forward_hooks) - keys:
                m._forward_hooks.pop(k, None)


@contextlib.contextmanager
def _frozen_params_traced(model: nn.Module) -> Iterator[None]:
    """Let frozen floating-point parameters require grad during the trace, then restore them: a
    frozen weight (Whisper's and Marian's position tables) builds no autograd edge, so the
    tracer would not see it couple to the channels it is added to."""
    frozen = [p for p in model.parameters() if not p.requires_grad and p.is_floating_point()]
    try:
        for p in frozen:
            p.requires_grad_(True)
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


@contextlib.contextmanager
def _out_of_place(model: nn.Module, clone: Container[nn.Module] = ()) -> Iterator[list[nn.Module]]:
    """Run in-place activations (``nn.ReLU(inplace=True)``) out of place during the trace: one
    applied to a Linear's output on 3-D or larger input (a view) rewrites the view's autograd
    node, and the Linear drops out of the graph (Swin-V2's position bias MLP).

    Other in-place writes into such a view (NaFlexViT's ``x.add_(pos)`` after its patch
    Linear) cannot be switched off: the Linears whose output view was written to are listed
    in the yielded list when the block exits; traced again with them in ``clone``, each one's
    output is copied after Torch-Pruning's hook has recorded the view."""
    changed = [m for m in model.modules() if getattr(m, "inplace", None) is True]
    seen: list[tuple[nn.Module, torch.Tensor, int]] = []
    hooked: dict[nn.Module, Any] = {}

    def after(mod: nn.Module, args: Any, out: Any) -> Any:
        if not isinstance(out, torch.Tensor) or out._base is None:
            return None
        if mod in clone:
            return out.clone()
        seen.append((mod, out, out._version))
        return None

    def before(mod: nn.Module, args: Any) -> None:
        # registered at the first call, so after the hooks Torch-Pruning's trace registered
        if mod not in hooked:
            hooked[mod] = mod.register_forward_hook(after)

    pre = [m.register_forward_pre_hook(before) for m in model.modules() if type(m) is nn.Linear]
    rewritten: list[nn.Module] = []
    try:
        for m in changed:
            m.inplace = False  # type: ignore[assignment]
        yield rewritten
    finally:
        rewritten += dict.fromkeys(m for m, t, v in seen if t._version != v)
        seen.clear()
        for h in [*pre, *hooked.values()]:
            h.remove()
        for m in changed:
            m.inplace = True  # type: ignore[assignment]


def _layout(idxs: Sequence[int], roots: Sequence[int], width: int) -> tuple[int, int] | None:
    """``(offset, repeat)`` if channel ``r`` owns exactly ``[offset + r*repeat, +repeat)``."""
    if not idxs or len(idxs) % width or None in roots:  # None: an index map lost the root
        return None
    rep = len(idxs) // width
    off = min(idxs)
    for i, r in zip(idxs, roots):
        if not (0 <= r < width) or (i - off) // rep != r:
            return None
    return (off, rep) if len(set(idxs)) == len(idxs) else None


def _blocks(idxs: Sequence[int], roots: Sequence[int], width: int) -> list[tuple[int, int]] | None:
    """``[(offset, 1), ...]`` if the indices are several blocks that each hold channels
    ``0..width-1`` in order (GhostNet's ``cat([x, cheap(x)])`` read by one conv)."""
    if not idxs or len(idxs) % width or len(idxs) == width or None in roots:
        return None
    pairs = sorted(zip(idxs, roots))
    out: list[tuple[int, int]] = []
    for k in range(0, len(pairs), width):
        seg = pairs[k : k + width]
        off = seg[0][0]
        if any(i != off + r or r != j for j, (i, r) in enumerate(seg)):
            return None
        out.append((off, 1))
    return out


def _weight_leaves(
    grad_fn: GradFn, params: Container[torch.Tensor], depth: int = 6
) -> list[torch.Tensor] | None:
    """The parameters behind ``grad_fn`` if it is computed from parameters alone (a weight such
    as ``w`` or ``w.t()``), or None if it depends on an activation or an input."""
    var = getattr(grad_fn, "variable", None)
    if var is not None:
        return [var] if var in params else None
    parents = [f for f, _ in grad_fn.next_functions if f is not None]
    if depth == 0 or not parents or grad_fn.name().lower().startswith("embedding"):
        return None  # a lookup reads the input ids too (autograd does not list them)
    leaves: list[torch.Tensor] = []
    for f in parents:
        sub = _weight_leaves(f, params, depth - 1)
        if sub is None:
            return None
        leaves += sub
    return leaves


def _is_conv1d(module: object) -> TypeIs[HFConv1D]:
    """Hugging Face's ``Conv1D`` (GPT-2 family): a Linear whose weight is stored [in, out]."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and _weight_is_2d(module)


def _weight_is_2d(module: object) -> bool:
    w = getattr(module, "weight", None)
    return w is not None and w.ndim == 2


def channel_counter(
    out_channels: Callable[[Any], int], in_channels: Callable[[Any], int | None]
) -> TPPruner:
    """A Torch-Pruning handler that only reports a module's channel counts: Torch-Pruning needs
    one to walk through a module it has no handler for (HF ``Conv1D``, ``nn.EmbeddingBag``) or
    that the finder cuts (recurrent and attention modules); widthwise never prunes through it,
    and distinct in/out functions keep its input and output channels uncoupled."""
    import torch_pruning as tp

    class ChannelCounter(tp.pruner.BasePruningFunc):
        def prune_out_channels(  # pragma: no cover - never pruned
            self, layer: nn.Module, idxs: Sequence[int]
        ) -> nn.Module:
            return layer

        def prune_in_channels(  # pragma: no cover - never pruned
            self, layer: nn.Module, idxs: Sequence[int]
        ) -> nn.Module:
            return layer

        def get_out_channels(self, layer: nn.Module) -> int:
            return out_channels(layer)

        def get_in_channels(self, layer: nn.Module) -> int | None:
            return in_channels(layer)

    pruner: TPPruner = ChannelCounter()
    return pruner


@functools.cache
def _embedding_bag_pruner() -> TPPruner:
    """``nn.EmbeddingBag`` (Torch-Pruning has no handler): channels are weight columns; its
    inputs are indices, so it has no input channels."""
    return channel_counter(lambda m: int(m.embedding_dim), lambda m: None)


@functools.cache
def _conv1d_pruner() -> TPPruner:
    """HF ``Conv1D``: channels are weight columns (out) and rows (in)."""
    return channel_counter(lambda m: int(m.weight.shape[1]), lambda m: int(m.weight.shape[0]))


class _Dims:
    """Per traced graph: the layer behind each autograd node, and the channel dim found for
    each node so far (:func:`_channel_dim` is asked about many nodes; each is answered once,
    which keeps the repairs linear in the size of the graph)."""

    def __init__(self, dg: TPGraph):
        self.layers = {n.grad_fn: n.module for n in dg.module2node.values() if n.grad_fn}
        self.memo: dict[GradFn, int | None] = {}


_DIMS: weakref.WeakKeyDictionary[Any, _Dims] = weakref.WeakKeyDictionary()


def _dims(dg: TPGraph) -> _Dims:
    found = _DIMS.get(dg)
    if found is None:
        found = _DIMS[dg] = _Dims(dg)
    return found


def _channels_last(gf: GradFn, dims: _Dims) -> bool:
    """The tensor ``gf`` computes holds its channels in its last dim (:func:`_channel_dim`)."""
    dim, nd = _channel_dim(gf, dims), _ndim(gf)
    return dim is not None and dim == nd - 1


def _ndim(f: GradFn) -> int:
    meta = getattr(f, "_input_metadata", None)
    return len(meta[0].shape) if meta else 0


def _channel_dim(gf: GradFn, dims: _Dims, depth: int = 16) -> int | None:
    if gf not in dims.memo:
        dims.memo[gf] = None  # a cycle reads as unknown
        dims.memo[gf] = _find_channel_dim(gf, dims, depth)
    return dims.memo[gf]


def _find_channel_dim(gf: GradFn, dims: _Dims, depth: int) -> int | None:
    """Which dim of the tensor ``gf`` computes holds the channels, followed back to the layer
    that made them (Linear, LayerNorm, Embedding: last; a convolution or BatchNorm: dim 1)
    through permutes, transposes, views that keep the channel dim whole, slices and
    element-wise ops; None where that cannot be told."""
    mod = dims.layers.get(gf)
    nd = _ndim(gf)
    if isinstance(mod, (nn.Linear, nn.LayerNorm, nn.Embedding)) or _is_conv1d(mod):
        return nd - 1
    if isinstance(mod, (nn.RNNBase, nn.MultiheadAttention)):
        return nd - 1  # features last, time and batch first in either order
    shared = isinstance(mod, nn.PReLU) and mod.weight.numel() == 1  # one slope: element-wise
    if isinstance(mod, nn.Module) and _has_own_params(mod) and not shared:
        return 1 if nd >= 2 else None  # channels first (a 2-D output: also last)
    parents = [(f, nr) for f, nr in gf.next_functions if f is not None and _ndim(f) > 0]
    if depth == 0 or not parents or not nd:
        return None
    name = gf.name().lower()
    f0 = parents[0][0]
    if name.startswith(_PRODUCTS):
        kept = _product_channels(gf, dims, depth - 1)
        return next((d for d in kept if d is not None), None)
    if "permute" in name:
        order = [_signed(d) % nd for d in getattr(gf, "_saved_dims", ())]
        c = _channel_dim(f0, dims, depth - 1)
        return order.index(c) if c is not None and c in order else None
    if "transpose" in name or name.startswith("tbackward"):
        d0, d1 = (
            _signed(getattr(gf, d, k)) % nd for k, d in enumerate(("_saved_dim0", "_saved_dim1"))
        )
        c = _channel_dim(f0, dims, depth - 1)
        return None if c is None else {d0: d1, d1: d0}.get(c, c)
    if any(k in name for k in ("view", "reshape")):
        before = [int(x) for x in getattr(gf, "_saved_self_sym_sizes", ())]
        after = list(getattr(gf, "_input_metadata")[0].shape)  # noqa: B009
        c = _channel_dim(f0, dims, depth - 1)
        if c is None or not before:
            return None
        if c == len(before) - 1 and after[-1:] == before[-1:]:
            return nd - 1  # the last dim kept whole (B, H*W, C <-> B, H, W, C)
        if after[: c + 1] == before[: c + 1]:
            return c  # the dims up to the channels kept (B, C, H, W -> B, C, H*W)
        # only size-1 dims added or dropped up to the channels (GCNet's context matmul:
        # B, 1, C, H*W <-> B, C, H*W; B, 1, C, 1 -> B, C, 1, 1)
        lead = [d for d in before[:c] if d != 1]
        for j in range(len(after)):
            if after[j] == before[c] and [d for d in after[:j] if d != 1] == lead:
                return j
        return None
    if "unsqueeze" in name or "squeeze" in name:
        d = getattr(gf, "_saved_dim", None)
        c = _channel_dim(f0, dims, depth - 1)
        if d is None or c is None or isinstance(d, tuple):
            return None
        if "unsqueeze" in name:
            d = _signed(d) % nd
            return c + 1 if c >= d else c
        d = _signed(d) % _ndim(f0)
        return None if d == c else (c - 1 if c > d else c)
    if _ndim(f0) != nd and not any(k in name for k in _BROADCASTING):
        return None  # squeeze, unsqueeze, select, a reduction without keepdim
    for f, _ in parents:  # element-wise (right-aligned when broadcast), slice, pad, clone
        c = _channel_dim(f, dims, depth - 1)
        if c is not None:
            return c + nd - _ndim(f)
    return None


def _signed(dim: Any) -> int:
    """A dim autograd saved: a negative one (``transpose(-2, -1)``) reads as an unsigned int."""
    d = int(dim)
    return d - 2**64 if d >= 2**63 else d


#: autograd nodes of matrix products (``a @ b`` of 2-D or 3-D tensors)
_PRODUCTS = ("bmmbackward", "mmbackward")


def _product_channels(gf: GradFn, dims: _Dims, depth: int) -> tuple[int | None, int | None]:
    """For ``a @ b`` (``out[i, j] = sum_k a[i, k] b[k, j]``): the output dim that holds the
    channels of ``a`` and of ``b``, or None for an operand whose channels are summed over
    (``k``) or unknown."""
    ops = [f for f, _ in gf.next_functions]
    nd = _ndim(gf)
    if len(ops) != 2 or nd < 2 or any(f is None or _ndim(f) != nd for f in ops):
        return None, None
    ca, cb = (None if f is None else _channel_dim(f, dims, depth) for f in ops)
    return (nd - 2 if ca == nd - 2 else None), (nd - 1 if cb == nd - 1 else None)


def _cut_contractions(dg: TPGraph, nodes: list[TPNode]) -> None:
    """Cut the operands of ``a @ b`` whose channels are summed over from the product's output.
    Torch-Pruning treats a matrix product of two activations as element-wise, so its walks
    carry channel ``i`` of ``v`` into row ``i`` of an attention map and from there into the
    queries and keys (SHViT's and EfficientViT-MSRA's single-head attention on ``B, C, H*W``
    maps: ``q^T @ k``, ``v @ attn^T``). Where one operand keeps its channels in the output
    (``v``'s rows), the other is cut; where both are summed over (``q^T @ k``: channel ``i``
    of ``q`` meets channel ``i`` of ``k``), the output is cut and the operands stay tied to
    each other. Operands whose channel dim is unknown are left as Torch-Pruning has them."""
    found = _dims(dg)
    for node in nodes:
        gf = node.grad_fn
        if gf is None or not gf.name().lower().startswith(_PRODUCTS):
            continue
        ops = [f for f, _ in gf.next_functions]
        nd = _ndim(gf)
        if len(ops) != 2 or any(f is None or _ndim(f) != nd for f in ops) or nd < 2:
            continue
        ca, cb = (_channel_dim(f, found) if f is not None else None for f in ops)
        keep_a, keep_b = _product_channels(gf, found, 16)
        summed_a, summed_b = ca == nd - 1, cb == nd - 2
        if summed_a and summed_b:
            cut = list(node.outputs)
        elif keep_a is not None and keep_b is None:
            cut = [n for n in node.inputs if n.grad_fn is ops[1]]
        elif keep_b is not None and keep_a is None:
            cut = [n for n in node.inputs if n.grad_fn is ops[0]]
        else:
            continue
        for other in cut:
            node.dependencies = [d for d in node.dependencies if d.target is not other]
            other.dependencies = [d for d in other.dependencies if d.target is not node]


#: autograd nodes of element-wise arithmetic that broadcasts, and of reductions (keepdim)
_BROADCASTING = ("mulbackward", "divbackward", "addbackward", "subbackward", "wherebackward")
_REDUCING = (
    "meanbackward", "sumbackward", "normbackward", "linalgvectornormbackward", "stdbackward",
    "varbackward", "amaxbackward", "aminbackward", "maxbackward", "minbackward",
    "logsumexpbackward",
)  # fmt: skip


def _cut_channel_broadcasts(dg: TPGraph) -> set[TPNode]:
    """Cut the edges between an op and an operand broadcast over the channels, and between a
    reduction over the channels and its input. A gate of one channel scaling many (FocalNet's
    focal gates ``ctx * gates[:, l:l+1]``, a spatial attention map, a per-token weight
    ``h * w[:, None]``) does not tie those channels to anything, nor does RMSNorm's
    ``x.pow(2).mean(-1, keepdim=True)``; Torch-Pruning couples every operand of an
    element-wise op and passes indices through reductions, so its index maps would carry
    channel ``i`` into a one-channel tensor. The cases cut are those where the channel dim is
    known: size 1 against more along dim 1 only of a 2-D, 4-D or 5-D tensor (``N, C, H, W``),
    or along the last dim only of a 3-D tensor that holds channels last (``B, T, C``; not a
    Conv1d's ``B, C, L``: :func:`_channel_dim`). The permutation check still vouches for every
    group. Returns the broadcast operands: like an output, each of their channels has a fixed
    role (it scales all the channels of the other operand)."""
    import torch_pruning as tp

    def channel_only(dims: set[int], ndim: int, f: GradFn) -> bool:
        if ndim == 3:
            return dims == {2} and _channels_last(f, found)
        return dims == {1} and ndim in (2, 4, 5)

    found = _dims(dg)
    cut: set[TPNode] = set()
    for node in list(dg.module2node.values()):
        gf = node.grad_fn
        meta = getattr(gf, "_input_metadata", None)
        if node.type != tp.ops.OPTYPE.ELEMENTWISE or gf is None or not meta:
            continue
        op = gf.name().lower()
        arithmetic, reduction = op.startswith(_BROADCASTING), op.startswith(_REDUCING)
        if not arithmetic and not reduction:
            continue  # a view, permute, unsqueeze or matmul changes shapes for other reasons
        out = tuple(meta[0].shape)
        shapes = []
        for f, nr in gf.next_functions:
            in_meta = getattr(f, "_input_metadata", None)
            if f is None or not in_meta or nr >= len(in_meta):
                continue
            shape = tuple(in_meta[nr].shape)
            if len(shape) < len(out):
                shape = (1,) * (len(out) - len(shape)) + shape
            shapes.append((f, shape))
        # every operand broadcast and no layer says where the channels are: an outer sum of
        # tables (NaFlexViT's pos_y[:, :, None] + pos_x[:, None], channels last), not a gate
        outer = all(s != out for _, s in shapes) and _channel_dim(gf, found) is None
        for f, shape in shapes:
            if len(shape) != len(out) or not out or (arithmetic and outer):
                continue
            wide = {d for d, (a, b) in enumerate(zip(shape, out)) if a == 1 < b}
            narrow = {d for d, (a, b) in enumerate(zip(shape, out)) if a > 1 == b}
            broadcast = arithmetic and len(node.inputs) > 1 and channel_only(wide, len(out), f)
            if not broadcast and not (reduction and channel_only(narrow, len(out), f)):
                continue
            for other in [n for n in node.inputs if n.grad_fn is f]:
                node.dependencies = [d for d in node.dependencies if d.target is not other]
                other.dependencies = [d for d in other.dependencies if d.target is not node]
                if broadcast:
                    cut.add(other)
    return cut


def _reshape_index_mapping(dg: TPGraph, node: TPNode) -> None:
    """Torch-Pruning's reshape maps, except for a view that keeps channels last where they are
    (Swin's ``[B, H*W, C] -> [B, H, W, C]``): channel ``i`` stays channel ``i``, but
    Torch-Pruning, which only knows channels first, reads a flatten into its readers."""
    import torch_pruning as tp

    gf = node.grad_fn
    if gf is not None and any(k in gf.name().lower() for k in ("view", "reshapealias")):
        found = _dims(dg)
        parents = [f for f, _ in gf.next_functions if f is not None]
        if parents and _channels_last(parents[0], found) and _channels_last(gf, found):
            return
        if parents and _channels_last(parents[0], found) and _merged_last(dg, node):
            return
    if gf is not None and _keeps_channels(gf, dg):
        return
    tp.dependency.index_mapping.update_reshape_index_mapping(dg, node)


def _keeps_channels(gf: GradFn, dg: TPGraph) -> bool:
    """A reshape that leaves every channel index where it is: one that only adds or drops
    size-1 dims (a per-channel scale ``gamma.reshape(1, -1, 1, 1)``: InceptionNeXt, ConvNeXt),
    or one that keeps the dims up to the channels (``B, C, H*W -> B, C, H, W`` after an
    attention product: SHViT). Torch-Pruning infers a flatten from channel counts it guesses
    through the graph, which here multiplies the indices."""
    before = [int(x) for x in getattr(gf, "_saved_self_sym_sizes", ())]
    meta = getattr(gf, "_input_metadata", None)
    if not before or not meta:
        return False
    after = [int(x) for x in meta[0].shape]
    if [s for s in before if s != 1] == [s for s in after if s != 1]:
        return True
    parents = [f for f, _ in gf.next_functions if f is not None]
    c = _channel_dim(parents[0], _dims(dg)) if parents else None
    c = 1 if c is None else c  # Torch-Pruning's own assumption: channels first
    return c < min(len(before), len(after)) - 1 and before[: c + 1] == after[: c + 1]


def _merged_last(dg: TPGraph, node: TPNode) -> bool:
    """A view that merges trailing dims ``(..., a, b, C) -> (..., a*b*C)`` of a channels-last
    tensor (timm Swin's patch merging: ``reshape(B, H/2, 2, W/2, 2, C).permute(...)
    .flatten(3)``): channel ``c`` becomes features ``c + j*C`` for each of the ``a*b``
    positions. Sets those maps; False where the view is not such a merge."""
    from torch_pruning import _helpers

    gf = node.grad_fn
    sizes = [int(n) for n in getattr(gf, "_saved_self_sym_sizes", ())]
    meta = getattr(gf, "_input_metadata", None)
    if len(sizes) < 5 or not meta:
        return False
    out, c = [int(n) for n in meta[0].shape], sizes[-1]
    m = len(out) - 1
    # a map (B, H, W, kC) out of small neighbourhoods: not a flatten of the spatial dims of a
    # (B, C, H, W) map, nor a pooled (B, C, 1, 1) view, whose channel dim can read as last
    # where the sizes coincide
    if m < 3 or out[:m] != sizes[:m] or math.prod(sizes[m:]) != out[-1] or out[-1] == c:
        return False
    if c < 2 or out[-1] // c > 16:
        return False
    k = out[-1] // c
    H = _helpers._HybridIndex

    def spread(idxs: list[Any]) -> list[Any]:
        return [H(idx=i.idx + j * c, root_idx=i.root_idx) for i in idxs for j in range(k)]

    def fold(idxs: list[Any]) -> list[Any]:
        return [H(idx=i.idx % c, root_idx=i.root_idx) for i in idxs]

    for d in node.dependencies:
        if d.target in node.inputs:
            d.index_mapping[0] = fold
    for n in node.inputs:
        for d in n.dependencies:
            if d.target is node:
                d.index_mapping[0] = spread
    return True


def _cut_scoring_products(dg: TPGraph) -> None:
    """Cut a product ``x @ w`` with a raw ``[C, 1]`` parameter (SwiftFormer's ``w_g``) from
    its output: it scores each token from its C channels, so ``x``'s channels meet ``w``'s
    rows, but its one output is not those channels (a softmax over it scales them as a
    gate). Torch-Pruning passes the channel indices through it."""
    import torch_pruning as tp

    for node in list(dg.module2node.values()):
        gf = node.grad_fn
        if node.type != tp.ops.OPTYPE.ELEMENTWISE or gf is None:
            continue
        if not gf.name().lower().startswith(("mmbackward", "bmmbackward")):
            continue
        leaves = [getattr(f, "variable", None) for f, _ in gf.next_functions if f is not None]
        if not any(
            isinstance(v, nn.Parameter) and v.ndim == 2 and v.shape[1] == 1 and v.shape[0] > 1
            for v in leaves
        ):
            continue
        for out in list(node.outputs):
            node.dependencies = [d for d in node.dependencies if d.target is not out]
            out.dependencies = [d for d in out.dependencies if d.target is not node]


class _PieceThenSlice:
    """Two index maps applied in order: a split piece's and a slice's (either direction)."""

    def __init__(self, piece: IndexMap, other: IndexMap, towards_slice: bool):
        self.piece, self.other, self.towards_slice = piece, other, towards_slice

    def __call__(self, idxs: list[Any]) -> list[Any]:
        if self.towards_slice:
            return self.other(self.piece(idxs))
        return self.piece(self.other(idxs))


def _slice_index_mapping(dg: TPGraph, node: TPNode) -> None:
    """Torch-Pruning's slice maps, kept after a split map on the same edge: a slice of a split
    piece (FocalNet's ``gates[:, l:l+1]`` of ``split(x, (C, C, L+1))``) is mapped by the piece
    first, then by the slice; Torch-Pruning writes both into the same slot. Idempotent: the
    finder updates the maps twice."""
    import torch_pruning as tp

    gf = node.grad_fn
    sizes = getattr(gf, "_saved_self_sym_sizes", None)
    if (
        gf is not None
        and sizes is not None
        and len(sizes) == 4
        and getattr(gf, "_saved_dim", 0) == 1
    ):
        parents = [f for f, _ in gf.next_functions if f is not None]
        found = _dims(dg)
        if parents and _channels_last(parents[0], found):
            return  # a slice of rows of a B, H, W, C map (Swin's patch merging): no channel map
    saved = getattr(gf, "_saved_dim", None)
    if gf is not None and sizes is not None and saved is not None and len(sizes) in (3, 4):
        # Torch-Pruning maps dim 1 of 4-D and dim 2 of 3-D slices only, but autograd saves
        # negative dims and bounds as huge unsigned ints, which pass its test: a rotary half
        # ``x[..., -k:]`` of ``B, heads, T, hd`` was mapped as channels from 2**64 - k on
        nd, axis = len(sizes), _signed(saved) % len(sizes)
        if axis != {4: 1, 3: 2}[nd]:
            return
        parents = [f for f, _ in gf.next_functions if f is not None]
        if nd == 3 and parents and _channel_dim(parents[0], _dims(dg)) == 1:
            return  # the time axis of ``B, C, T`` (a causal conv's ``out[:, :, -seq_len:]``)
        bounds = slice(_signed(node.module.start), _signed(node.module.end), int(node.module.step))
        node.module.start, node.module.end, node.module.step = bounds.indices(int(sizes[axis]))
    edges = [d for d in node.dependencies if d.target in node.inputs]
    edges += [d for n in node.inputs for d in n.dependencies if d.target is node]
    before: dict[int, IndexMap | None] = {}
    for d in edges:
        old = d.index_mapping[0]
        if isinstance(old, tp.dependency.index_mapping._SliceIndexMapping):
            old = None  # this slice's own map from the first update (applied twice: x[:, c:])
        before[id(d)] = old.piece if isinstance(old, _PieceThenSlice) else old
    tp.dependency.index_mapping.update_slice_index_mapping(dg, node)
    for d in edges:
        old, new = before[id(d)], d.index_mapping[0]
        if old is not None and new is not None and old is not new:
            d.index_mapping[0] = _PieceThenSlice(old, new, towards_slice=d.target is node)


def _expand_index_mapping(dg: TPGraph, node: TPNode) -> None:
    """Torch-Pruning's expand map, which reads every 5-D expand as Hugging Face's repeat of
    key/value heads ``(B, kv_heads, 1, T, hd) -> (B, kv_heads, n_rep, T, hd)``, only for such
    an expand: a 5-D matmul's broadcast (timm's windowed attention, ``q @ k^T`` on
    ``(B, windows, heads, T, hd)``) repeats nothing along dim 2, and the map built for it
    divides by zero when the walk crosses it."""
    import torch_pruning as tp

    gf = node.grad_fn
    sizes = getattr(gf, "_saved_self_sym_sizes", None)
    meta = getattr(gf, "_input_metadata", None)
    if sizes is None or len(sizes) != 5 or sizes[2] != 1 or not meta:
        return
    out = list(meta[0].shape)
    if len(out) != 5 or out[2] < 2 or min(int(s) for s in sizes) < 1:
        return
    tp.dependency.index_mapping.update_expand_index_mapping(dg, node)
    maps = [d.index_mapping[0] for d in node.dependencies]
    maps += [d.index_mapping[0] for n in node.inputs for d in n.dependencies if d.target is node]
    if any(getattr(m, "repeat", 1) < 1 or getattr(m, "head_dim", 1) < 1 for m in maps):
        for d in node.dependencies:
            d.index_mapping[0] = None
        for n in node.inputs:
            for d in n.dependencies:
                if d.target is node:
                    d.index_mapping[0] = None


#: autograd nodes of the matrix product inside ``nn.Linear`` (2-D ``addmm``; ``mm`` on a
#: non-contiguous input, the bias added after)
_LINEAR_PRODUCTS = ("addmmbackward", "mmbackward")


def _linear_input(gf: GradFn, layer: nn.Module, depth: int = 4) -> GradFn | None:
    """The autograd node of the tensor a Linear read, found from its output node ``gf``: the
    activation operand of the product with its weight, before the view that flattened its
    leading dims (``B, T, C -> B*T, C``). None where that product is not found."""
    weight = getattr(layer, "weight")  # noqa: B009
    params = set(layer.parameters(recurse=False))
    todo, seen = [(gf, depth)], set()
    while todo:
        f, left = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        parents = [p for p, _ in f.next_functions if p is not None]
        if f.name().lower().startswith(_LINEAR_PRODUCTS):
            leaves = [_weight_leaves(p, params) for p in parents]
            acts = [p for p, w in zip(parents, leaves) if w is None]
            if (
                any(w is not None and any(t is weight for t in w) for w in leaves)
                and len(acts) == 1
            ):
                act = acts[0]
                before = [int(x) for x in getattr(act, "_saved_self_sym_sizes", ())]
                name = act.name().lower()
                after = [int(x) for x in getattr(act, "_input_metadata")[0].shape]  # noqa: B009
                merge = len(before) > 2 and before[-1:] == after[-1:]  # not a flatten (VGG's)
                if merge and any(k in name for k in ("view", "reshape")):
                    up = [p for p, _ in act.next_functions if p is not None]
                    return up[0] if up else None  # the merge of the leading dims undone
                return act
        if left:
            todo += [(p, left - 1) for p in parents]
    return None


def _features_from(gf: GradFn, dims: _Dims, depth: int = 8) -> nn.Module | None:
    """The Linear whose output features are the last dim of the tensor ``gf`` computes,
    followed back through element-wise ops of one activation and views that keep the last dim
    (not through a transpose or permute); None where there is none."""
    f: GradFn | None = gf
    for _ in range(depth):
        if f is None:
            return None
        mod = dims.layers.get(f)
        if isinstance(mod, nn.Linear) or _is_conv1d(mod):
            return mod
        if isinstance(mod, nn.Module) and _has_own_params(mod):
            return None  # another layer made these features
        name, nd = f.name().lower(), _ndim(f)
        if any(k in name for k in ("transpose", "permute")) or name.startswith("tbackward"):
            return None
        if any(k in name for k in ("view", "reshape")):
            before = [int(x) for x in getattr(f, "_saved_self_sym_sizes", ())]
            after = [int(x) for x in getattr(f, "_input_metadata")[0].shape]  # noqa: B009
            if not before or before[-1:] != after[-1:]:
                return None
        acts = [
            p for p, _ in f.next_functions if p is not None and getattr(p, "variable", None) is None
        ]
        if len(acts) != 1 or (
            _ndim(acts[0]) != nd and "view" not in name and "reshape" not in name
        ):
            return None
        f = acts[0]
    return None


def _cut_token_linears(dg: TPGraph) -> set[TPNode]:
    """Cut Linears applied along a dim that does not hold the channels (MLP-Mixer's and
    ResMLP's token mixing, ``mlp(norm(x).transpose(1, 2)).transpose(1, 2)``; gMLP's spatial
    gate) from the channels they read and write. Such a Linear is applied to each channel
    alike, so channel ``c`` stays channel ``c`` through it; its inputs and outputs are tokens
    (positions, fixed by the data), while Torch-Pruning ties its columns and rows to the
    channels. The Linears that then read its output features (the token MLP's ``fc2``) keep
    its hidden units (rows of one, columns of the next: a group of their own). Returns the
    nodes of the last Linear of each such chain: their rows are positions, fixed like an
    output."""
    import torch_pruning as tp

    # asked in the order of the forward, with no answers from earlier questions: those could
    # have stopped at the depth bound far down a deep residual stream
    found = _Dims(dg)
    nodes = [
        n
        for n in dg.module2node.values()
        if n.grad_fn is not None
        and (n.type == tp.ops.OPTYPE.LINEAR or _is_conv1d(n.module))
        and isinstance(getattr(n.module, "weight", None), torch.Tensor)
    ]
    chain: dict[nn.Module, TPNode] = {}  # token Linears, and those reading their features
    fed: set[nn.Module] = set()  # members of a chain whose features another member reads
    for node in sorted(nodes, key=lambda n: n.grad_fn._sequence_nr()):  # type: ignore[union-attr]
        assert node.grad_fn is not None
        act = _linear_input(node.grad_fn, node.module)
        if act is None or _ndim(act) < 3:  # (batch, channels, tokens) at least
            continue
        c = _channel_dim(act, found)
        if c is not None and c != _ndim(act) - 1:
            chain[node.module] = node
            for other in list(node.inputs):  # its columns read tokens, not channels
                node.dependencies = [d for d in node.dependencies if d.target is not other]
                other.dependencies = [d for d in other.dependencies if d.target is not node]
            continue
        src = _features_from(act, found)
        if src is not None and src in chain:
            chain[node.module] = node
            fed.add(src)
    writers = {n for m, n in chain.items() if m not in fed}
    for node in writers:  # its rows are tokens: added back to the stream after a transpose
        for other in list(node.outputs):
            node.dependencies = [d for d in node.dependencies if d.target is not other]
            other.dependencies = [d for d in other.dependencies if d.target is not node]
    return writers


def _cut_group_statistics(dg: TPGraph, limit: int = 32) -> dict[TPNode, tuple[int, int]]:
    """Cut the per-group statistic of a hand-written group norm (timm's EvoNorm-S:
    ``x.reshape(B, G, C // G, H, W).var((2, 3, 4), keepdim=True).expand(...).reshape(B, C, H,
    W)``, or with ``(B, G, -1)``) out of the graph: it is one value per sample and group,
    unchanged when channels move within their group and changed when they move across.
    Torch-Pruning passes the channel indices through both reshapes as if they were a flatten,
    which scatters the group. Cut: the reshape into groups from the branch below it, and the
    reshape back from both sides; the branch must be parameter-free, read nothing else, reach
    one value per group (a size-1 dim after the groups) and end in reshapes back to ``x``'s
    shape. The edge from ``x`` to the reshape into groups is kept with no index map, so a walk
    reaches it with ``x``'s channels. Returns that reshape's node -> ``(C, G)``; the
    permutation check still vouches for every group."""
    import torch_pruning as tp

    def shape_out(n: TPNode) -> list[int] | None:
        meta = getattr(n.grad_fn, "_input_metadata", None)
        return [int(s) for s in meta[0].shape] if meta else None

    def sever(a: TPNode, b: TPNode) -> None:
        a.dependencies = [d for d in a.dependencies if d.target is not b]
        b.dependencies = [d for d in b.dependencies if d.target is not a]

    out: dict[TPNode, tuple[int, int]] = {}
    for node in list(dg.module2node.values()):
        gf = node.grad_fn
        if node.type != tp.ops.OPTYPE.RESHAPE or gf is None or len(node.inputs) != 1:
            continue
        before = [int(s) for s in getattr(gf, "_saved_self_sym_sizes", ())]
        after = shape_out(node)
        if len(before) < 3 or not after or len(after) < 3 or after[0] != before[0]:
            continue
        c, g = before[1], after[1]
        split = after[2:] == [c // g, *before[2:]] or after[2:] == [math.prod(before[1:]) // g]
        if not (1 < g < c and c % g == 0 and split):
            continue
        # the branch below the reshape into groups, up to the reshapes back
        branch, merges, stat, ok = {node}, [], False, True
        queue = list(node.outputs)
        while queue and ok:
            n = queue.pop()
            if n in branch or n in merges:
                continue
            shape = shape_out(n)
            if n.type == tp.ops.OPTYPE.RESHAPE and shape == before:
                merges.append(n)
                continue
            ok = (
                len(branch) < limit
                and shape is not None
                and n.type not in (tp.ops.OPTYPE.PARAMETER, tp.ops.OPTYPE.OUTPUT)
                and not (isinstance(n.module, nn.Module) and _has_own_params(n.module))
                and bool(n.outputs)
                and all(i in branch for i in n.inputs)
            )
            if shape is not None and len(shape) >= 3:  # one value per sample and group
                stat |= shape[:2] == [before[0], g] and set(shape[2:]) == {1}
            branch.add(n)
            queue.extend(n.outputs)
        if not ok or not stat or not merges:
            continue
        for n in list(node.outputs):
            sever(node, n)
        for m in merges:
            for n in list(m.inputs) + list(m.outputs):
                sever(m, n)
        for d in node.inputs[0].dependencies:
            if d.target is node:
                d.index_mapping = [None] * len(d.index_mapping)
        for d in node.dependencies:
            d.index_mapping = [None] * len(d.index_mapping)
        out[node] = (c, g)
    return out
